package org.slidesam.client;

/** The image a field of view is on: a slide the server reads itself, or pixels the client uploads. */
public sealed interface ImageRef permits ImageRef.Slide, ImageRef.Uploaded {

    /**
     * What a load balancer in front of several servers routes this image's calls by (metadata
     * {@code slidesam-affinity}): SHA-256 of {@code "slide:" + slideId} for a slide, the pixels' own SHA-256
     * for an upload, as every slidesam client computes it.
     */
    String affinityKey();

    /** A slide named relative to the server's slide root, '/'-separated (e.g. {@code cases/a.svs}). */
    record Slide(String slideId) implements ImageRef {
        @Override
        public String affinityKey() {
            return EncodedImage.sha256Hex(("slide:" + slideId).getBytes(java.nio.charset.StandardCharsets.UTF_8));
        }
    }

    /**
     * Pixels sent by the client and where they sit in level-0 space: the image covers level-0
     * [originX, originX + width * downsample) and likewise in y. mpp and objectivePower: 0 when unknown.
     */
    record Uploaded(EncodedImage image, double originX, double originY, double downsample, double mpp,
                    double objectivePower) implements ImageRef {
        @Override
        public String affinityKey() {
            return image.sha256();
        }
    }

    static ImageRef slide(String slideId) {
        return new Slide(slideId);
    }
}
