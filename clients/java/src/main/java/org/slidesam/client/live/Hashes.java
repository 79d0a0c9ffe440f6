package org.slidesam.client.live;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.stream.Collectors;
import org.slidesam.client.Polygon;

/** The hashes the bridge writes into a result's provenance, computed as the bridge computes them. */
public final class Hashes {

    private Hashes() {
    }

    static String sha256(String text) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException impossible) {
            throw new IllegalStateException(impossible);
        }
    }

    /**
     * The bridge's {@code qupath_values.geometry_sha256}: every ring vertex as QuPath keeps it (snapped to its
     * 0.01-px grid, float32) in integer hundredths "x,y", sorted, joined by ";". (The bridge also reduces a polygon
     * that snapping would make invalid, as QuPath does; a traced mask never is.)
     */
    public static String geometrySha256(List<Polygon> polygons) {
        var vertices = new ArrayList<long[]>();
        for (Polygon polygon : polygons) {
            addRing(vertices, polygon.exterior());
            polygon.holes().forEach(hole -> addRing(vertices, hole));
        }
        vertices.sort(Comparator.<long[]>comparingLong(v -> v[0]).thenComparingLong(v -> v[1]));
        return sha256(vertices.stream().map(v -> v[0] + "," + v[1]).collect(Collectors.joining(";")));
    }

    private static void addRing(List<long[]> vertices, double[] xy) {
        for (int i = 0; i + 1 < xy.length; i += 2) {
            vertices.add(new long[] {hundredths(xy[i]), hundredths(xy[i + 1])});
        }
    }

    /** As qupath_values._as_written, in hundredths: Math.round(v * 100) / 100 on JTS's grid, then float32. */
    private static long hundredths(double value) {
        float kept = (float) (Math.floor(value / 0.01 + 0.5) * 0.01);
        return (long) Math.rint((double) kept * 100.0);
    }
}
