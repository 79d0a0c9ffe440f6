package org.slidesam.client;

/**
 * What SAM sees: an image, a level-0 region and the resolution it is read at.
 *
 * @param windows     how a region larger than one encoder window at that resolution is segmented
 * @param alignToGrid let the server move a region that fits one window onto its embedding grid, so that a
 *                    precomputed slide serves it without an encode (the result's region says where)
 */
public record FieldOfView(ImageRef image, Rect region, Resolution resolution, WindowMode windows, boolean alignToGrid) {

    public FieldOfView {
        resolution = resolution == null ? Resolution.FIT : resolution;
        windows = windows == null ? WindowMode.AUTO : windows;
    }

    public FieldOfView(ImageRef image, Rect region, Resolution resolution) {
        this(image, region, resolution, WindowMode.AUTO, false);
    }

    public static FieldOfView onSlide(String slideId, Rect region, Resolution resolution) {
        return new FieldOfView(ImageRef.slide(slideId), region, resolution);
    }

    public FieldOfView withWindows(WindowMode mode, boolean aligned) {
        return new FieldOfView(image, region, resolution, mode, aligned);
    }
}
