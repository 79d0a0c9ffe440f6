package org.slidesam.client.live;

/**
 * What the prompt logic needs of one annotation, in level-0 pixels: its id, class and name, and its
 * shape: points (interleaved x0, y0, x1, y1, ...), a rectangle (x, y, width, height: the bounds of
 * any area), or another shape named for messages.
 */
public record PromptAnnotation(String id, String pathClass, String name, Shape shape, String shapeName, double[] coordinates) {

    public enum Shape { POINTS, AREA, OTHER }

    public PromptAnnotation {
        pathClass = pathClass == null ? "" : pathClass;
        name = name == null ? "" : name;
    }

    public static PromptAnnotation points(String id, String pathClass, String name, double[] xy) {
        return new PromptAnnotation(id, pathClass, name, Shape.POINTS, "Points", xy.clone());
    }

    public static PromptAnnotation area(String id, String pathClass, String name, double x, double y, double width, double height) {
        return new PromptAnnotation(id, pathClass, name, Shape.AREA, "Polygon", new double[] {x, y, width, height});
    }

    public static PromptAnnotation other(String id, String pathClass, String name, String shapeName) {
        return new PromptAnnotation(id, pathClass, name, Shape.OTHER, shapeName, new double[0]);
    }

    /** The name that groups prompts: the annotation's name without surrounding spaces. */
    String group() {
        return name.strip();
    }
}
