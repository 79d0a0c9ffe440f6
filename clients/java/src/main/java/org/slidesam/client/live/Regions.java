package org.slidesam.client.live;

import java.util.Arrays;
import org.slidesam.client.Rect;
import org.slidesam.client.Resolution;

/** Level-0 regions for fields of view, in whole pixels inside the image (qupath_bridge/fov.py and pixels.py). */
public final class Regions {

    /** The model input side the server fits a region to when no resolution is given. */
    static final double MODEL_INPUT = 1024;

    private Regions() {
    }

    /** The region SAM sees for the group, following the settings' mode. */
    public static Rect choose(PromptGroup group, View view, double width, double height, FovSettings settings) {
        if (settings.mode() == FovSettings.Mode.SELECTION_OR_VIEW) {
            for (Rect candidate : Arrays.asList(view.selection(), view.visible())) {
                Rect region = candidate == null ? null : wholePixels(candidate, width, height);
                if (region != null && group.points().stream().allMatch(p -> region.contains(p[0], p[1]))) {
                    return region;
                }
            }
        }
        return aroundPrompts(group, width, height, settings);
    }

    /**
     * The bridge's rule: the prompts' bounding box grows by margin times its longer side on every side,
     * then to at least minSize per side around the same centre, then moves inside the image.
     */
    public static Rect aroundPrompts(PromptGroup group, double width, double height, FovSettings settings) {
        double x0 = Double.POSITIVE_INFINITY, y0 = Double.POSITIVE_INFINITY;
        double x1 = Double.NEGATIVE_INFINITY, y1 = Double.NEGATIVE_INFINITY;
        for (double[] p : group.points()) {
            x0 = Math.min(x0, p[0]);
            x1 = Math.max(x1, p[0]);
            y0 = Math.min(y0, p[1]);
            y1 = Math.max(y1, p[1]);
        }
        double pad = settings.margin() * Math.max(x1 - x0, y1 - y0);
        long[] xs = span(x0 - pad, x1 + pad, settings.minSize(), (long) width);
        long[] ys = span(y0 - pad, y1 + pad, settings.minSize(), (long) height);
        return new Rect(xs[0], ys[0], xs[1] - xs[0], ys[1] - ys[0]);
    }

    /** A rectangle clipped to the image with its edges moved out to whole pixels; null when nothing is left. */
    public static Rect wholePixels(Rect rect, double width, double height) {
        double left = Math.max(0, Math.floor(rect.x())), top = Math.max(0, Math.floor(rect.y()));
        double right = Math.min(width, Math.ceil(rect.maxX())), bottom = Math.min(height, Math.ceil(rect.maxY()));
        return right > left && bottom > top ? new Rect(left, top, right - left, bottom - top) : null;
    }

    /**
     * The level-0 downsample a resolution asks for over a region: from the image's µm per pixel and
     * objective power, or (FIT) so that the region's longer side fits the model input.
     */
    public static double downsample(Rect region, Resolution resolution, double mpp, double objectivePower) {
        return switch (resolution.kind()) {
            case DOWNSAMPLE -> resolution.value();
            case MPP -> resolution.value() / known(mpp, "µm per pixel");
            case MAGNIFICATION -> known(objectivePower, "objective power") / resolution.value();
            case FIT -> Math.max(1.0, Math.max(region.width(), region.height()) / MODEL_INPUT);
        };
    }

    private static double known(double value, String what) {
        if (!(value > 0 && Double.isFinite(value))) {
            throw new IllegalArgumentException("the image does not record its " + what + " (choose a downsample)");
        }
        return value;
    }

    /** [start, end] grown to minSize around its centre, moved inside [0, limit], whole pixels. */
    private static long[] span(double start, double end, double minSize, long limit) {
        double size = Math.min(Math.max(end - start, minSize), limit);
        double centre = (start + end) / 2;
        double low = Math.min(Math.max(centre - size / 2, 0.0), limit - size);
        return new long[] {Math.max(0, (long) Math.floor(low)), Math.min(limit, (long) Math.ceil(low + size))};
    }
}
