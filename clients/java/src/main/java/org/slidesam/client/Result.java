package org.slidesam.client;

import java.util.List;

/**
 * The server's current answer for an object: its polygons in level-0 pixels, SAM's score, the
 * prompts behind it and where the history stands.
 *
 * @param areaUm2    NaN when the image's pixel size is unknown
 * @param region     the level-0 rectangle actually read
 * @param downsample the resolution actually read, relative to level 0
 * @param resolution the resolution the model saw beside the one asked for; null from a server that does not say
 */
public record Result(String objectId, List<Polygon> polygons, double score, double areaPx, double areaUm2,
                     String modelId, List<Click> clicks, Rect box, int step, boolean canUndo, boolean canRedo,
                     Rect region, double downsample, Timings timings, ModelResolution resolution) {

    /**
     * Server-side timings in milliseconds; {@code cacheHit}: the image embedding was reused;
     * {@code windowsEncoded}: encoder runs this step cost; {@code windowsFromStore}: embeddings read from the
     * server's precomputed store.
     */
    public record Timings(double readMs, double encodeMs, double decodeMs, double postprocessMs, double totalMs,
                          double queueMs, boolean cacheHit, int windowsEncoded, int windowsFromStore) {
    }

    /** The mask is coarser than the field of view asked for (see {@link #resolution()}). */
    public boolean downsampled() {
        return resolution != null && resolution.downsampled();
    }

    public Result {
        polygons = List.copyOf(polygons);
        clicks = List.copyOf(clicks);
    }

    public boolean isEmpty() {
        return polygons.isEmpty();
    }

    /** The polygons as a WKT MULTIPOLYGON (rings closed), e.g. for JTS's WKTReader. */
    public String toWkt() {
        if (polygons.isEmpty()) {
            return "MULTIPOLYGON EMPTY";
        }
        var wkt = new StringBuilder("MULTIPOLYGON (");
        for (int p = 0; p < polygons.size(); p++) {
            wkt.append(p == 0 ? "(" : ", (");
            appendRing(wkt, polygons.get(p).exterior());
            for (double[] hole : polygons.get(p).holes()) {
                wkt.append(", ");
                appendRing(wkt, hole);
            }
            wkt.append(')');
        }
        return wkt.append(')').toString();
    }

    private static void appendRing(StringBuilder wkt, double[] xy) {
        wkt.append('(');
        for (int i = 0; i <= xy.length; i += 2) {
            int at = i % xy.length;  // repeats the first point to close the ring
            wkt.append(i == 0 ? "" : ", ").append(number(xy[at])).append(' ').append(number(xy[at + 1]));
        }
        wkt.append(')');
    }

    private static String number(double value) {
        return value == Math.rint(value) && Math.abs(value) < 1e15 ? Long.toString((long) value) : Double.toString(value);
    }
}
