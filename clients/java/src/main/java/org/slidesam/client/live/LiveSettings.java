package org.slidesam.client.live;

import java.util.LinkedHashMap;
import java.util.Map;
import org.slidesam.client.ObjectOptions;
import org.slidesam.client.PolygonOptions;
import org.slidesam.client.Strategy;

/**
 * What shapes a live result besides its prompts: the prompt classes, the result's class, the model,
 * where SAM looks and how masks become polygons. The bridge's defaults are {@link #BRIDGE}.
 */
public record LiveSettings(PromptClasses classes, String targetClass, String model, FovSettings fov,
                           PolygonOptions polygon, Strategy strategy) {

    public static final LiveSettings BRIDGE =
            new LiveSettings(PromptClasses.DEFAULT, "Tumor", "", FovSettings.BRIDGE, PolygonOptions.DEFAULT, Strategy.DEFAULT);

    public LiveSettings withTargetClass(String newTarget) {
        return new LiveSettings(classes, newTarget, model, fov, polygon, strategy);
    }

    public LiveSettings withModel(String newModel) {
        return new LiveSettings(classes, targetClass, newModel, fov, polygon, strategy);
    }

    public LiveSettings withFov(FovSettings newFov) {
        return new LiveSettings(classes, targetClass, model, newFov, polygon, strategy);
    }

    ObjectOptions objectOptions() {
        return new ObjectOptions(model, polygon, strategy);
    }

    /** The settings part of a group's hash and provenance, as the bridge's Settings.hashed(). */
    Map<String, Object> hashed() {
        var polygonJson = new LinkedHashMap<String, Object>();
        polygonJson.put("simplify_tolerance_um", polygon.simplifyToleranceUm());
        polygonJson.put("simplify_tolerance_px", polygon.simplifyTolerancePx());
        polygonJson.put("max_vertices", polygon.maxVertices());
        polygonJson.put("min_area_um2", polygon.minAreaUm2());
        polygonJson.put("min_area_px", polygon.minAreaPx());
        var json = new LinkedHashMap<String, Object>();
        json.put("model", model);
        json.put("fov", fov.json());
        json.put("polygon", polygonJson);
        json.put("class", targetClass);
        return json;
    }
}
