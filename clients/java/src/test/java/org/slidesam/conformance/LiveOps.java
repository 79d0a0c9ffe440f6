package org.slidesam.conformance;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.slidesam.client.Click;
import org.slidesam.client.Polygon;
import org.slidesam.client.Rect;
import org.slidesam.client.Resolution;
import org.slidesam.client.SlidesamClient;
import org.slidesam.client.live.FovSettings;
import org.slidesam.client.live.Hashes;
import org.slidesam.client.live.LiveImage;
import org.slidesam.client.live.LiveSegmenter;
import org.slidesam.client.live.LiveSettings;
import org.slidesam.client.live.PixelReader;
import org.slidesam.client.live.PromptAnnotation;
import org.slidesam.client.live.PromptClasses;
import org.slidesam.client.live.PromptGroup;
import org.slidesam.client.live.PromptGroups;
import org.slidesam.client.live.Regions;
import org.slidesam.client.live.ResultAnnotation;
import org.slidesam.client.live.SlideMap;
import org.slidesam.client.live.View;

/** The driver's operations on the live client's logic (prompt groups, regions, the live segmenter). */
final class LiveOps {

    private LiveSegmenter live;
    private final List<String> problems = new ArrayList<>();

    Map<String, Object> handle(String op, JsonObject request, SlidesamClient client) throws IOException {
        switch (op) {
            case "prompt_groups": {
                var found = PromptGroups.find(annotations(request), PromptClasses.DEFAULT);
                return Map.of("groups", found.groups().stream().map(LiveOps::groupJson).toList(), "problems", found.problems());
            }
            case "outside_image": {
                String message = PromptGroups.outsideImage(group(request.getAsJsonObject("group")), num(request, "width"),
                        num(request, "height"));
                return message == null ? Map.of() : Map.of("message", message);
            }
            case "region": {
                var settings = fovSettings(request.getAsJsonObject("fov"));
                View view = new View(optionalRect(request, "selection"), optionalRect(request, "visible"));
                Rect region = Regions.choose(group(request.getAsJsonObject("group")), view, num(request, "width"),
                        num(request, "height"), settings);
                return Map.of("region", List.of(region.x(), region.y(), region.width(), region.height()));
            }
            case "live_start": {
                live = new LiveSegmenter(client, image(request.getAsJsonObject("image")), settings(request),
                        SlideMap.parse(strings(request.getAsJsonArray("slide_map"))), result -> { }, problems::add);
                return Map.of();
            }
            case "live_apply": {
                problems.clear();
                View view = new View(optionalRect(request, "selection"), optionalRect(request, "visible"));
                var results = live.apply(annotations(request), view).stream().map(LiveOps::annotationJson).toList();
                return Map.of("results", results, "problems", List.copyOf(problems));
            }
            case "live_undo_edit": {
                var edit = live.undoEdit(annotations(request));
                return edit == null ? Map.of() : Map.of("id", edit.annotationId(), "remaining", edit.remaining());
            }
            case "geometry_sha256": {
                var polygons = new ArrayList<Polygon>();
                for (JsonElement polygon : request.getAsJsonArray("polygons")) {
                    var rings = new ArrayList<double[]>();
                    polygon.getAsJsonArray().forEach(ring -> rings.add(doubles(ring.getAsJsonArray())));
                    polygons.add(new Polygon(rings.get(0), rings.subList(1, rings.size())));
                }
                return Map.of("sha256", Hashes.geometrySha256(polygons));
            }
            case "prompts_sha256":
                return Map.of("sha256", group(request.getAsJsonObject("group")).sha256(settings(request)));
            case "result_group": {
                String group = ResultAnnotation.groupOf(request.get("description").getAsString());
                return group == null ? Map.of() : Map.of("group", group);
            }
            default:
                throw new IllegalArgumentException("unknown op " + op);
        }
    }

    private static Map<String, Object> annotationJson(ResultAnnotation annotation) {
        var json = new LinkedHashMap<String, Object>();
        json.put("group", annotation.group());
        json.put("name", annotation.name());
        json.put("class", annotation.pathClass());
        json.put("description", annotation.description());
        json.put("measurements", annotation.measurements());
        json.put("wkt", annotation.wkt());
        json.put("result", ConformanceDriver.resultJson(annotation.result()).get("result"));
        return json;
    }

    private static Map<String, Object> groupJson(PromptGroup group) {
        var json = new LinkedHashMap<String, Object>();
        json.put("name", group.name());
        json.put("clicks", group.clicks().stream().map(c -> List.of(c.x(), c.y(), c.positive())).toList());
        Rect box = group.box();
        json.put("box", box == null ? null : List.of(box.x(), box.y(), box.width(), box.height()));
        return json;
    }

    /** Annotations as {"id", "class", "name"} plus "points": [[x, y], ...], "rect": [x, y, w, h] or "shape": "LineString". */
    private static List<PromptAnnotation> annotations(JsonObject request) {
        var annotations = new ArrayList<PromptAnnotation>();
        for (JsonElement element : request.getAsJsonArray("annotations")) {
            JsonObject a = element.getAsJsonObject();
            String id = a.get("id").getAsString(), cls = a.get("class").getAsString(), name = a.get("name").getAsString();
            if (a.has("points")) {
                JsonArray points = a.getAsJsonArray("points");
                double[] xy = new double[points.size() * 2];
                for (int i = 0; i < points.size(); i++) {
                    xy[2 * i] = points.get(i).getAsJsonArray().get(0).getAsDouble();
                    xy[2 * i + 1] = points.get(i).getAsJsonArray().get(1).getAsDouble();
                }
                annotations.add(PromptAnnotation.points(id, cls, name, xy));
            } else if (a.has("rect")) {
                Rect r = rect(a.getAsJsonArray("rect"));
                annotations.add(PromptAnnotation.area(id, cls, name, r.x(), r.y(), r.width(), r.height()));
            } else {
                annotations.add(PromptAnnotation.other(id, cls, name, a.get("shape").getAsString()));
            }
        }
        return annotations;
    }

    private static PromptGroup group(JsonObject json) {
        var clicks = new ArrayList<Click>();
        for (JsonElement c : json.getAsJsonArray("clicks")) {
            var xyp = c.getAsJsonArray();
            clicks.add(new Click(xyp.get(0).getAsDouble(), xyp.get(1).getAsDouble(), xyp.get(2).getAsBoolean()));
        }
        Rect box = json.has("box") && !json.get("box").isJsonNull() ? rect(json.getAsJsonArray("box")) : null;
        return new PromptGroup(json.get("name").getAsString(), clicks, box);
    }

    private static LiveSettings settings(JsonObject request) {
        return LiveSettings.BRIDGE.withTargetClass(request.get("target_class").getAsString())
                .withModel(request.has("model") ? request.get("model").getAsString() : "")
                .withFov(fovSettings(request.getAsJsonObject("fov")));
    }

    private static FovSettings fovSettings(JsonObject fov) {
        Resolution resolution = fov.has("downsample") ? Resolution.downsample(num(fov, "downsample"))
                : fov.has("magnification") ? Resolution.magnification(num(fov, "magnification")) : Resolution.FIT;
        var mode = fov.has("mode") ? FovSettings.Mode.valueOf(fov.get("mode").getAsString()) : FovSettings.Mode.PROMPTS;
        return new FovSettings(mode, num(fov, "margin"), num(fov, "min_size"), resolution);
    }

    /** The image; its pixels (when no slide map names it) come from a PNG of the whole image at "png_downsample". */
    private static LiveImage image(JsonObject json) throws IOException {
        PixelReader pixels = null;
        if (json.has("png")) {
            BufferedImage whole = ImageIO.read(Path.of(json.get("png").getAsString()).toFile());
            double scale = num(json, "png_downsample");
            pixels = (region, downsample) -> crop(whole, region, scale, downsample);
        }
        return new LiveImage(json.get("name").getAsString(), num(json, "width"), num(json, "height"), num(json, "mpp"),
                num(json, "objective_power"), json.get("path").getAsString(), null, pixels);
    }

    /** The region at the downsample, as QuPath's ImageServer.readRegion returns it: round(size / downsample) pixels covering exactly the region. */
    private static BufferedImage crop(BufferedImage whole, Rect region, double scale, double downsample) {
        var out = new BufferedImage((int) Math.round(region.width() / downsample), (int) Math.round(region.height() / downsample),
                BufferedImage.TYPE_INT_RGB);
        Graphics2D g = out.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_INTERPOLATION, RenderingHints.VALUE_INTERPOLATION_BILINEAR);
        g.scale(out.getWidth() / region.width(), out.getHeight() / region.height());
        g.translate(-region.x(), -region.y());
        g.drawImage(whole, 0, 0, (int) Math.round(whole.getWidth() * scale), (int) Math.round(whole.getHeight() * scale), null);
        g.dispose();
        return out;
    }

    private static Rect optionalRect(JsonObject request, String key) {
        return request.has(key) && !request.get(key).isJsonNull() ? rect(request.getAsJsonArray(key)) : null;
    }

    private static Rect rect(JsonArray xywh) {
        return new Rect(xywh.get(0).getAsDouble(), xywh.get(1).getAsDouble(), xywh.get(2).getAsDouble(), xywh.get(3).getAsDouble());
    }

    private static double[] doubles(JsonArray array) {
        double[] values = new double[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).getAsDouble();
        }
        return values;
    }

    private static List<String> strings(JsonArray array) {
        var list = new ArrayList<String>();
        array.forEach(e -> list.add(e.getAsString()));
        return list;
    }

    private static double num(JsonObject object, String key) {
        return object.get(key).getAsDouble();
    }

    void close() {
        if (live != null) {
            live.close();
        }
    }
}
