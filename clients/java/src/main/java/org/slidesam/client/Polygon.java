package org.slidesam.client;

import java.util.List;

/**
 * One part of an object in level-0 pixels: rings as interleaved coordinates x0, y0, x1, y1, ...
 * (closed implicitly: the first point is not repeated).
 */
public record Polygon(double[] exterior, List<double[]> holes) {

    public Polygon {
        holes = List.copyOf(holes);
    }
}
