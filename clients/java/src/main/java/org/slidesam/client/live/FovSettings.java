package org.slidesam.client.live;

import java.util.LinkedHashMap;
import java.util.Map;
import org.slidesam.client.Resolution;
import org.slidesam.client.WindowMode;

/**
 * Where SAM looks for a prompt group and at which resolution.
 *
 * @param mode     PROMPTS: the bridge's rule (the prompts' bounding box grown by {@code margin} of its
 *                 longer side, at least {@code minSize} level-0 pixels a side, inside the image);
 *                 SELECTION_OR_VIEW: the selected annotation's bounds when they hold every prompt, else
 *                 the region visible in the viewer when it does, else the bridge's rule
 * @param resolution FIT lets the server fit the region to the model input
 * @param windows    how a region larger than one encoder window at that resolution is segmented (AUTO: the
 *                   server goes coarse to fine over windows for it)
 * @param alignToGrid let the server move a region that fits one window onto its embedding grid (a
 *                   precomputed slide then answers the first click without an encode)
 */
public record FovSettings(Mode mode, double margin, double minSize, Resolution resolution, WindowMode windows,
                          boolean alignToGrid) {

    public enum Mode { PROMPTS, SELECTION_OR_VIEW }

    /** The bridge's defaults: margin 0.25, at least 2048 px, fitted to the model input. */
    public static final FovSettings BRIDGE = new FovSettings(Mode.PROMPTS, 0.25, 2048, Resolution.FIT);

    public FovSettings {
        if (!(margin >= 0 && Double.isFinite(margin)) || !(minSize > 0 && Double.isFinite(minSize))) {
            throw new IllegalArgumentException("margin must be >= 0 and minSize > 0");
        }
        resolution = resolution == null ? Resolution.FIT : resolution;
        windows = windows == null ? WindowMode.AUTO : windows;
    }

    public FovSettings(Mode mode, double margin, double minSize, Resolution resolution) {
        this(mode, margin, minSize, resolution, WindowMode.AUTO, false);
    }

    public FovSettings withMode(Mode newMode) {
        return new FovSettings(newMode, margin, minSize, resolution, windows, alignToGrid);
    }

    public FovSettings withResolution(Resolution newResolution) {
        return new FovSettings(mode, margin, minSize, newResolution, windows, alignToGrid);
    }

    public FovSettings withWindows(WindowMode newWindows, boolean align) {
        return new FovSettings(mode, margin, minSize, resolution, newWindows, align);
    }

    /** As the bridge's FovSettings.to_json(), plus the mode when it is not the bridge's. */
    Map<String, Object> json() {
        var json = new LinkedHashMap<String, Object>();
        json.put("margin", margin);
        json.put("min_size", minSize);
        switch (resolution.kind()) {
            case MPP -> json.put("mpp", resolution.value());
            case MAGNIFICATION -> json.put("magnification", resolution.value());
            case DOWNSAMPLE -> json.put("downsample", resolution.value());
            case FIT -> { }
        }
        if (windows != WindowMode.AUTO) {  // the bridge leaves both out at their defaults
            json.put("windows", windows.name().toLowerCase(java.util.Locale.ROOT));
        }
        if (alignToGrid) {
            json.put("align_to_grid", true);
        }
        if (mode != Mode.PROMPTS) {
            json.put("region", "selection or view");
        }
        return json;
    }
}
