package org.slidesam.client;

/** A level-0 rectangle: origin top-left, x to the right, y down. Also the box prompt. */
public record Rect(double x, double y, double width, double height) {

    public double maxX() {
        return x + width;
    }

    public double maxY() {
        return y + height;
    }

    /** Whether (px, py) lies inside, edges included. */
    public boolean contains(double px, double py) {
        return px >= x && px <= maxX() && py >= y && py <= maxY();
    }
}
