package org.slidesam.client;

/** The image a field of view is on: a slide the server reads itself, or pixels the client uploads. */
public sealed interface ImageRef permits ImageRef.Slide, ImageRef.Uploaded {

    /** A slide named relative to the server's slide root, '/'-separated (e.g. {@code cases/a.svs}). */
    record Slide(String slideId) implements ImageRef {
    }

    /**
     * Pixels sent by the client and where they sit in level-0 space: the image covers level-0
     * [originX, originX + width * downsample) and likewise in y. mpp and objectivePower: 0 when unknown.
     */
    record Uploaded(EncodedImage image, double originX, double originY, double downsample, double mpp,
                    double objectivePower) implements ImageRef {
    }

    static ImageRef slide(String slideId) {
        return new Slide(slideId);
    }
}
