package org.slidesam.client;

/** A click in level-0 pixels (QuPath's image coordinates); {@code positive} marks the object, otherwise the background. */
public record Click(double x, double y, boolean positive) {
}
