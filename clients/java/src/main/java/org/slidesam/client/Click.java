package org.slidesam.client;

/** A click in level-0 pixels (QuPath's image coordinates); {@code positive} marks the object, otherwise the background. */
public record Click(double x, double y, boolean positive) {

    public static Click positive(double x, double y) {
        return new Click(x, y, true);
    }

    public static Click negative(double x, double y) {
        return new Click(x, y, false);
    }
}
