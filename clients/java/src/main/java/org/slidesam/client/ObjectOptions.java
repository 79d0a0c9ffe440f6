package org.slidesam.client;

/** What an object is segmented with: model (empty: the server's default), polygon options and prompt strategy. */
public record ObjectOptions(String model, PolygonOptions polygonOptions, Strategy strategy) {

    public static final ObjectOptions DEFAULT = new ObjectOptions("", PolygonOptions.DEFAULT, Strategy.DEFAULT);

    public ObjectOptions {
        model = model == null ? "" : model;
        polygonOptions = polygonOptions == null ? PolygonOptions.DEFAULT : polygonOptions;
        strategy = strategy == null ? Strategy.DEFAULT : strategy;
    }
}
