package org.slidesam.client.live;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import org.slidesam.client.Click;
import org.slidesam.client.Rect;

/**
 * The bridge's prompt convention (qupath_bridge/prompts.py), message for message: Points annotations of
 * the positive/negative classes are clicks, an area of the box class is the box; prompts group by
 * annotation name; clicks keep annotation order, then point order. A group needs a positive click or
 * a box, at most one box, and finite coordinates; a class that differs from a prompt class only in
 * case or spacing is reported rather than ignored.
 */
public final class PromptGroups {

    /** The groups found, in order of first appearance, and the problems of the groups left out. */
    public record Found(List<PromptGroup> groups, List<String> problems) {
    }

    /** Which annotation loses its last point, and the points it keeps (empty: remove the annotation). */
    public record PointsEdit(String annotationId, double[] remaining) {
    }

    private PromptGroups() {
    }

    public static Found find(List<PromptAnnotation> annotations, PromptClasses classes) {
        Map<String, String> nearMisses = new LinkedHashMap<>();
        classes.names().forEach(n -> nearMisses.put(normalised(n), n));
        Map<String, List<Click>> clicks = new LinkedHashMap<>();
        Map<String, List<Rect>> boxes = new LinkedHashMap<>();
        Map<String, List<String>> problems = new LinkedHashMap<>();
        for (PromptAnnotation annotation : annotations) {
            String pathClass = annotation.pathClass();
            if (!classes.names().contains(pathClass)) {
                String meant = nearMisses.get(normalised(pathClass));
                if (meant != null) {
                    problem(problems, annotation.group(), "unknown class " + PyFormat.repr(pathClass) + " (the prompt classes are "
                            + classes.names().stream().map(PyFormat::repr).collect(Collectors.joining(", "))
                            + "; did you mean " + PyFormat.repr(meant) + "?)");
                }
                continue;
            }
            String group = annotation.group();
            clicks.computeIfAbsent(group, g -> new ArrayList<>());
            String where = "annotation " + annotation.id() + " (" + pathClass + ")";
            double[] xy = annotation.coordinates();
            if (!Arrays.stream(xy).allMatch(Double::isFinite)) {
                problem(problems, group, where + " has coordinates that are not finite numbers");
            } else if (pathClass.equals(classes.box())) {
                if (annotation.shape() != PromptAnnotation.Shape.AREA) {
                    problem(problems, group, where + " must be a rectangle, got " + annotation.shapeName());
                } else if (xy[2] <= 0 || xy[3] <= 0) {
                    problem(problems, group, where + " has no area");
                } else {
                    boxes.computeIfAbsent(group, g -> new ArrayList<>()).add(new Rect(xy[0], xy[1], xy[2], xy[3]));
                }
            } else if (annotation.shape() != PromptAnnotation.Shape.POINTS) {
                problem(problems, group, where + " must be a Points annotation, got " + annotation.shapeName());
            } else {
                if (xy.length == 0) {
                    problem(problems, group, where + " holds no points");
                }
                boolean positive = pathClass.equals(classes.positive());
                for (int i = 0; i + 1 < xy.length; i += 2) {
                    clicks.get(group).add(new Click(xy[i], xy[i + 1], positive));
                }
            }
        }
        var groups = new ArrayList<PromptGroup>();
        for (var entry : clicks.entrySet()) {
            String group = entry.getKey();
            List<Rect> groupBoxes = boxes.getOrDefault(group, List.of());
            if (problems.containsKey(group)) {
                continue;
            }
            if (groupBoxes.size() > 1) {
                problem(problems, group, groupBoxes.size() + " boxes; a group takes at most one");
            }
            if (groupBoxes.isEmpty() && entry.getValue().stream().noneMatch(Click::positive)) {
                problem(problems, group, "no positive point and no box: nothing says where the object is");
            }
            if (!problems.containsKey(group)) {
                groups.add(new PromptGroup(group, entry.getValue(), groupBoxes.isEmpty() ? null : groupBoxes.get(0)));
            }
        }
        var messages = new ArrayList<String>();
        problems.forEach((group, list) -> list.forEach(m -> messages.add(new PromptGroup(group, List.of(), null).label() + ": " + m)));
        return new Found(groups, messages);
    }

    /** A message when a prompt lies outside the image [0, width] x [0, height], else null. */
    public static String outsideImage(PromptGroup group, double width, double height) {
        for (double[] p : group.points()) {
            if (!(p[0] >= 0 && p[0] <= width && p[1] >= 0 && p[1] <= height)) {
                return group.label() + ": the prompt at (" + PyFormat.general(p[0]) + ", " + PyFormat.general(p[1])
                        + ") lies outside the image (0.." + PyFormat.general(width) + " x 0.." + PyFormat.general(height)
                        + " level-0 pixels)";
            }
        }
        return null;
    }

    /** The edit that takes the group's last click away (undo in QuPath), or null when it has none. */
    public static PointsEdit withoutLastClick(List<PromptAnnotation> annotations, PromptClasses classes, String group) {
        for (int i = annotations.size() - 1; i >= 0; i--) {
            PromptAnnotation a = annotations.get(i);
            boolean clickClass = a.pathClass().equals(classes.positive()) || a.pathClass().equals(classes.negative());
            if (clickClass && a.group().equals(group) && a.shape() == PromptAnnotation.Shape.POINTS && a.coordinates().length >= 2) {
                return new PointsEdit(a.id(), Arrays.copyOf(a.coordinates(), a.coordinates().length - 2));
            }
        }
        return null;
    }

    private static void problem(Map<String, List<String>> problems, String group, String message) {
        problems.computeIfAbsent(group, g -> new ArrayList<>()).add(message);
    }

    private static String normalised(String name) {
        return String.join(" ", name.strip().split("\\s+")).toLowerCase(Locale.ROOT);
    }
}
