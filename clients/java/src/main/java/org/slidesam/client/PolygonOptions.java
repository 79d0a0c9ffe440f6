package org.slidesam.client;

/** How the server turns masks into polygons; zeros mean "none" or "the server's default". */
public record PolygonOptions(double simplifyToleranceUm, double simplifyTolerancePx, int maxVertices,
                             double minAreaUm2, double minAreaPx) {

    public static final PolygonOptions DEFAULT = new PolygonOptions(0, 0, 0, 0, 0);
}
