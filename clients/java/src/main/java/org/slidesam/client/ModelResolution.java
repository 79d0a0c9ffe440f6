package org.slidesam.client;

/**
 * The resolution the model actually saw for a result, beside the one the field of view asked for.
 * Downsamples are level-0 pixels per pixel; µm/px values are NaN where the image's pixel size is unknown.
 *
 * @param downsampled      the mask is coarser than asked for (one window over a region larger than 1024 px)
 * @param windows          encoder windows behind the mask (1: a single window; multi-window: the coarse one too)
 * @param windowsDecoded   windows this step decoded (the others' logits were reused)
 * @param coarseDownsample multi-window: the coarse window's downsample; NaN otherwise
 */
public record ModelResolution(double requestedDownsample, double requestedMpp, double encoderDownsample, double encoderMpp,
                              boolean downsampled, int windows, int windowsDecoded, double coarseDownsample) {

    /** How many times coarser than asked for the model saw the image (1: as asked). */
    public double factor() {
        return requestedDownsample > 0 ? encoderDownsample / requestedDownsample : 1.0;
    }
}
