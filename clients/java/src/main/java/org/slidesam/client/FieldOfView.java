package org.slidesam.client;

/** What SAM sees: an image, a level-0 region and the resolution it is read at. */
public record FieldOfView(ImageRef image, Rect region, Resolution resolution) {

    public FieldOfView {
        resolution = resolution == null ? Resolution.FIT : resolution;
    }

    public static FieldOfView onSlide(String slideId, Rect region, Resolution resolution) {
        return new FieldOfView(ImageRef.slide(slideId), region, resolution);
    }
}
