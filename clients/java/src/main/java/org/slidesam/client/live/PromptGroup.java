package org.slidesam.client.live;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.slidesam.client.Click;
import org.slidesam.client.Rect;

/** The prompts of one object: clicks in order and an optional box, level-0; named by its prompts' name. */
public record PromptGroup(String name, List<Click> clicks, Rect box) {

    static final String RESULT_PREFIX = "SAM";

    public PromptGroup {
        clicks = List.copyOf(clicks);
    }

    /** The result annotation's name: "SAM: name", or "SAM" for the unnamed group. */
    public String resultName() {
        return name.isEmpty() ? RESULT_PREFIX : RESULT_PREFIX + ": " + name;
    }

    /** Every prompt coordinate: the clicks, then the box's corners. */
    List<double[]> points() {
        var points = new ArrayList<double[]>();
        clicks.forEach(c -> points.add(new double[] {c.x(), c.y()}));
        if (box != null) {
            points.add(new double[] {box.x(), box.y()});
            points.add(new double[] {box.maxX(), box.maxY()});
        }
        return points;
    }

    /** {"clicks": [[x, y, 1 or 0], ...], "box": [x, y, w, h] or null}, as the bridge records it. */
    Map<String, Object> promptsJson() {
        var json = new LinkedHashMap<String, Object>();
        json.put("clicks", clicks.stream().map(c -> List.<Object>of(c.x(), c.y(), c.positive() ? 1 : 0)).toList());
        json.put("box", box == null ? null : List.of(box.x(), box.y(), box.width(), box.height()));
        return json;
    }

    /**
     * The bridge's hash of these prompts under these settings (PromptGroup.sha256 in prompts.py): a result
     * whose provenance carries it is up to date, for this client and for {@code slidesam sync}.
     */
    public String sha256(LiveSettings settings) {
        return Hashes.sha256(PyFormat.canonicalJson(Map.of("prompts", promptsJson(), "settings", settings.hashed())));
    }

    String label() {
        return name.isEmpty() ? "the unnamed prompt group" : "prompt group " + PyFormat.repr(name);
    }
}
