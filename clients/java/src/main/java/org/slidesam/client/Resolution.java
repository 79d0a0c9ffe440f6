package org.slidesam.client;

/**
 * The resolution a field of view is read at: µm per pixel, objective magnification, a downsample
 * relative to level 0, or (FIT) whatever makes the region's longer side fit the model input.
 */
public record Resolution(Kind kind, double value) {

    public enum Kind { FIT, MPP, MAGNIFICATION, DOWNSAMPLE }

    public static final Resolution FIT = new Resolution(Kind.FIT, 0);

    public Resolution {
        if (kind != Kind.FIT && !(value > 0 && Double.isFinite(value))) {
            throw new IllegalArgumentException("a resolution must be a positive number, got " + value);
        }
    }

    public static Resolution mpp(double micronsPerPixel) {
        return new Resolution(Kind.MPP, micronsPerPixel);
    }

    public static Resolution magnification(double magnification) {
        return new Resolution(Kind.MAGNIFICATION, magnification);
    }

    public static Resolution downsample(double downsample) {
        return new Resolution(Kind.DOWNSAMPLE, downsample);
    }
}
