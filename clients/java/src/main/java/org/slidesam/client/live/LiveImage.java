package org.slidesam.client.live;

/**
 * The image the prompts are on: its level-0 size, pixel size (0 when unknown), objective power (0
 * when unknown), where it lives (for the slide map; either may be null) and how to read its pixels
 * when the server cannot read the slide itself.
 */
public record LiveImage(String name, double width, double height, double mpp, double objectivePower,
                        String localPath, String uri, PixelReader pixels) {
}
