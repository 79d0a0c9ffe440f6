package org.slidesam.qupath

import groovy.transform.CompileStatic
import java.awt.image.BufferedImage
import org.slidesam.client.Rect
import org.slidesam.client.live.LiveImage
import org.slidesam.client.live.PixelReader
import qupath.lib.images.servers.ImageServer
import qupath.lib.images.servers.PixelCalibration
import qupath.lib.images.servers.ServerTools
import qupath.lib.regions.RegionRequest

/** A QuPath image server as the live client sees the image: name, size, pixel size, where it lives and its pixels. */
@CompileStatic
final class ServerImages {

    private ServerImages() {
    }

    static LiveImage of(ImageServer<BufferedImage> server) {
        Collection<URI> uris = server.URIs
        URI uri = uris.isEmpty() ? null : uris.iterator().next()
        PixelCalibration calibration = server.pixelCalibration
        double mpp = calibration.hasPixelSizeMicrons() ? calibration.averagedPixelSizeMicrons : 0
        double magnification = server.metadata.magnification
        PixelReader pixels = { Rect r, double downsample ->
            server.readRegion(RegionRequest.createInstance(server.path, downsample, (int) r.x(), (int) r.y(), (int) r.width(), (int) r.height()))
        } as PixelReader
        new LiveImage(ServerTools.getDisplayableImageName(server), server.width, server.height, mpp,
                Double.isNaN(magnification) ? 0 : magnification, uri?.scheme == 'file' ? new File(uri).path : null, uri?.toString(), pixels)
    }
}
