package org.slidesam.client.live;

import java.awt.image.BufferedImage;
import java.io.IOException;
import org.slidesam.client.Rect;

/** Reads a level-0 region of the image at a downsample (in QuPath: its ImageServer). */
@FunctionalInterface
public interface PixelReader {

    BufferedImage read(Rect region, double downsample) throws IOException;
}
