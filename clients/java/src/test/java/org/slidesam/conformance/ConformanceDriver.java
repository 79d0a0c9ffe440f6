package org.slidesam.conformance;

import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.slidesam.client.Click;
import org.slidesam.client.ConnectOptions;
import org.slidesam.client.EncodedImage;
import org.slidesam.client.FieldOfView;
import org.slidesam.client.ImageRef;
import org.slidesam.client.ObjectOptions;
import org.slidesam.client.ObjectSession;
import org.slidesam.client.PolygonOptions;
import org.slidesam.client.Rect;
import org.slidesam.client.Resolution;
import org.slidesam.client.Result;
import org.slidesam.client.ServerException;
import org.slidesam.client.SlidesamClient;
import org.slidesam.client.Strategy;
import org.slidesam.client.WindowMode;

/**
 * Drives the Java client from the conformance tests: one JSON request per line on stdin, one JSON
 * answer per line on stdout ({"ok": true, ...} or {"ok": false, "code": ..., "message": ...}).
 * The Node driver (clients/node/conformance_driver.js) speaks the same protocol.
 */
public final class ConformanceDriver {

    private final Gson gson = new Gson();
    private final LiveOps live = new LiveOps();
    private SlidesamClient client;
    private ObjectSession session;

    public static void main(String[] args) throws IOException {
        var driver = new ConformanceDriver();
        var out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            out.println(driver.gson.toJson(driver.answer(driver.gson.fromJson(line, JsonObject.class))));
        }
        driver.close();
    }

    private Map<String, Object> answer(JsonObject request) {
        try {
            var reply = new LinkedHashMap<String, Object>();
            reply.put("ok", true);
            reply.putAll(handle(request.get("op").getAsString(), request));
            return reply;
        } catch (ServerException error) {
            return Map.of("ok", false, "code", error.code(), "message", error.serverMessage());
        } catch (RuntimeException | IOException error) {
            return Map.of("ok", false, "code", "CLIENT_ERROR", "message", String.valueOf(error));
        }
    }

    private Map<String, Object> handle(String op, JsonObject request) throws IOException {
        switch (op) {
            case "connect":
                close();
                client = new SlidesamClient(connectOptions(request));
                return Map.of();
            case "list_models":
                return Map.of("models", client.listModels());
            case "upload":
                var image = EncodedImage.of(Files.readAllBytes(Path.of(request.get("png").getAsString())));
                return Map.of("upload", client.upload(image));
            case "upload_raw":
                return Map.of("upload", client.upload(EncodedImage.of(new byte[] {1, 2, 3})));
            case "open":
                if (session != null) {
                    session.close();
                }
                session = null;
                session = client.openObject(fieldOfView(request.getAsJsonObject("fov")), objectOptions(request));
                return resultJson(session.result());
            case "click":
                return resultJson(session.click(num(request, "x"), num(request, "y"), request.get("positive").getAsBoolean()));
            case "clicks":
                var clicks = new ArrayList<Click>();
                for (JsonElement c : request.getAsJsonArray("clicks")) {
                    var xyp = c.getAsJsonArray();
                    clicks.add(new Click(xyp.get(0).getAsDouble(), xyp.get(1).getAsDouble(), xyp.get(2).getAsBoolean()));
                }
                return resultJson(session.addClicks(clicks));
            case "box":
                return resultJson(session.box(rect(request.getAsJsonArray("box"))));
            case "undo":
                return resultJson(session.undo());
            case "redo":
                return resultJson(session.redo());
            case "reset":
                return resultJson(session.reset());
            case "finish":
                return resultJson(session.finish());
            case "session_info":
                return Map.of("reconnects", session.reconnects(), "object_id", session.objectId());
            case "bench":
                return Map.of("ms", bench(num(request, "x"), num(request, "y"), request.get("n").getAsInt()));
            default:
                return live.handle(op, request, client);
        }
    }

    /** Client-side round trips of n clicks, alternating a click and its undo so the object stays the same. */
    private List<Double> bench(double x, double y, int n) {
        var millis = new ArrayList<Double>(n);
        for (int i = 0; i < n; i++) {
            long started = System.nanoTime();
            session.click(x, y, true);
            millis.add((System.nanoTime() - started) / 1e6);
            session.undo();
        }
        return millis;
    }

    private static ConnectOptions connectOptions(JsonObject request) {
        var options = ConnectOptions.to(request.get("address").getAsString())
                .withTimeouts(Duration.ofSeconds(10), Duration.ofSeconds(120));
        if (request.has("token")) {
            options = options.withToken(request.get("token").getAsString());
        }
        if (request.has("trust_cert")) {
            options = options.withTrustCertificate(Path.of(request.get("trust_cert").getAsString()));
        }
        if (request.has("client_cert")) {
            options = options.withClientCertificate(
                    Path.of(request.get("client_cert").getAsString()), Path.of(request.get("client_key").getAsString()));
        }
        return options;
    }

    private static ObjectOptions objectOptions(JsonObject request) {
        String model = request.has("model") ? request.get("model").getAsString() : "";
        String strategy = request.has("strategy") ? request.get("strategy").getAsString() : "";
        return new ObjectOptions(model, PolygonOptions.DEFAULT,
                strategy.isEmpty() ? Strategy.DEFAULT : Strategy.valueOf(strategy.toUpperCase()));
    }

    private static FieldOfView fieldOfView(JsonObject fov) throws IOException {
        ImageRef image;
        if (fov.has("slide_id")) {
            image = ImageRef.slide(fov.get("slide_id").getAsString());
        } else {
            var png = EncodedImage.of(Files.readAllBytes(Path.of(fov.get("png").getAsString())));
            image = new ImageRef.Uploaded(png, num(fov, "origin_x"), num(fov, "origin_y"), num(fov, "downsample"),
                    fov.has("mpp") ? num(fov, "mpp") : 0, 0);
        }
        Resolution resolution = Resolution.FIT;
        if (fov.has("magnification")) {
            resolution = Resolution.magnification(num(fov, "magnification"));
        } else if (fov.has("mpp_read")) {
            resolution = Resolution.mpp(num(fov, "mpp_read"));
        } else if (fov.has("downsample_read")) {
            resolution = Resolution.downsample(num(fov, "downsample_read"));
        }
        WindowMode windows = fov.has("windows") ? WindowMode.valueOf(fov.get("windows").getAsString().toUpperCase(java.util.Locale.ROOT))
                : WindowMode.AUTO;
        boolean aligned = fov.has("align_to_grid") && fov.get("align_to_grid").getAsBoolean();
        return new FieldOfView(image, rect(fov.getAsJsonArray("region")), resolution, windows, aligned);
    }

    private static Rect rect(JsonArray xywh) {
        return new Rect(xywh.get(0).getAsDouble(), xywh.get(1).getAsDouble(), xywh.get(2).getAsDouble(),
                xywh.get(3).getAsDouble());
    }

    private static double num(JsonObject object, String key) {
        return object.get(key).getAsDouble();
    }

    /** The fields every client must agree on. */
    static Map<String, Object> resultJson(Result result) {
        var polygons = new ArrayList<Map<String, Object>>();
        result.polygons().forEach(p -> polygons.add(Map.of("exterior", p.exterior(), "holes", p.holes())));
        var clicks = result.clicks().stream().map(c -> List.of(c.x(), c.y(), c.positive())).toList();
        var json = new LinkedHashMap<String, Object>();
        json.put("object_id", result.objectId());
        json.put("polygons", polygons);
        json.put("score", result.score());
        json.put("area_px", result.areaPx());
        json.put("model_id", result.modelId());
        json.put("clicks", clicks);
        json.put("step", result.step());
        json.put("can_undo", result.canUndo());
        json.put("can_redo", result.canRedo());
        json.put("downsample", result.downsample());
        var seen = result.resolution();
        json.put("encoder_downsample", seen == null ? null : seen.encoderDownsample());
        json.put("downsampled", seen == null ? null : seen.downsampled());
        json.put("windows", seen == null ? null : seen.windows());
        json.put("wkt", result.toWkt());
        return Map.of("result", json);
    }

    private void close() {
        live.close();
        if (session != null) {
            session.close();
        }
        if (client != null) {
            client.close();
        }
    }
}
