package org.slidesam.client.live;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.Map;
import org.slidesam.client.ModelResolution;
import org.slidesam.client.Rect;
import org.slidesam.client.Result;

/**
 * A result as the annotation the bridge writes (qupath_bridge/results.py): class, name "SAM: group",
 * the provenance JSON as description, measurements "SAM score", "SAM clicks" and "SAM area µm^2"
 * (or "SAM area px^2"), and the polygons as WKT.
 *
 * @param group the prompt group it answers (how the QuPath side finds the annotation to update)
 */
public record ResultAnnotation(String group, String name, String pathClass, String description,
                               Map<String, Double> measurements, String wkt, Result result) {

    /** The `source` the bridge's sync gives results of prompt annotations. */
    static final String SOURCE = "prompts";

    /**
     * The annotation for a group's result, or null when SAM found no object.
     *
     * @param region the level-0 field of view SAM saw (whole pixels)
     */
    static ResultAnnotation of(PromptGroup group, Result result, LiveSettings settings, Rect region, String checkpointSha256) {
        if (result.isEmpty()) {
            return null;
        }
        Map<String, Object> hashed = settings.hashed();
        var record = new LinkedHashMap<String, Object>();
        record.put("slidesam", 1);
        record.put("source", SOURCE);
        record.put("group", group.name());
        record.put("prompts_sha256", group.sha256(settings));
        record.put("model_id", result.modelId());
        record.put("checkpoint_sha256", checkpointSha256);
        record.put("score", PyFormat.round(result.score(), 6));
        record.put("geometry_sha256", Hashes.geometrySha256(result.polygons()));
        record.putAll(group.promptsJson());
        var fov = new LinkedHashMap<String, Object>();
        fov.put("x", (long) region.x());
        fov.put("y", (long) region.y());
        fov.put("width", (long) region.width());
        fov.put("height", (long) region.height());
        fov.put("downsample", PyFormat.round(result.downsample(), 6));
        Rect read = result.region();
        if (read != null && moved(read, region)) {
            var readJson = new LinkedHashMap<String, Object>();
            readJson.put("x", read.x());
            readJson.put("y", read.y());
            readJson.put("width", read.width());
            readJson.put("height", read.height());
            fov.put("region_read", readJson);
        }
        record.put("field_of_view", fov);
        record.put("settings", hashed);
        if (result.resolution() != null) {
            record.put("resolution", resolutionJson(result.resolution()));
        }
        record.put("created", created());
        var measurements = new LinkedHashMap<String, Double>();
        measurements.put("SAM score", PyFormat.round(result.score(), 6));
        measurements.put("SAM clicks", (double) group.clicks().size());
        if (Double.isNaN(result.areaUm2())) {
            measurements.put("SAM area px^2", PyFormat.round(result.areaPx(), 3));
        } else {
            measurements.put("SAM area µm^2", PyFormat.round(result.areaUm2(), 3));
        }
        return new ResultAnnotation(group.name(), group.resultName(), settings.targetClass(), PyFormat.json(record),
                measurements, result.toWkt(), result);
    }

    /** The server read another rectangle than the one asked for (grid alignment, snapping to a coarse level). */
    private static boolean moved(Rect read, Rect asked) {
        return Math.abs(read.x() - asked.x()) > 0.5 || Math.abs(read.y() - asked.y()) > 0.5
                || Math.abs(read.width() - asked.width()) > 0.5 || Math.abs(read.height() - asked.height()) > 0.5;
    }

    /** As the bridge's ModelResolution.to_json(): 6 significant digits, unknowns as null. */
    private static Map<String, Object> resolutionJson(ModelResolution resolution) {
        var json = new LinkedHashMap<String, Object>();
        json.put("requested_downsample", significant(resolution.requestedDownsample()));
        json.put("requested_mpp", significant(resolution.requestedMpp()));
        json.put("encoder_downsample", significant(resolution.encoderDownsample()));
        json.put("encoder_mpp", significant(resolution.encoderMpp()));
        json.put("downsampled", resolution.downsampled());
        json.put("windows", (long) resolution.windows());
        if (!Double.isNaN(resolution.coarseDownsample())) {
            json.put("coarse_downsample", significant(resolution.coarseDownsample()));
        }
        return json;
    }

    private static Double significant(double value) {
        return Double.isNaN(value) ? null : Double.parseDouble(PyFormat.general(value));
    }

    /**
     * The prompt group whose result an annotation's description says it is (the bridge's provenance,
     * source "prompts"), or null for any other annotation.
     */
    public static String groupOf(String description) {
        if (description == null || description.isBlank()) {
            return null;
        }
        try {
            JsonElement parsed = JsonParser.parseString(description);
            if (!parsed.isJsonObject()) {
                return null;
            }
            JsonObject record = parsed.getAsJsonObject();
            boolean ours = record.has("slidesam") && record.get("slidesam").isJsonPrimitive() && record.get("slidesam").getAsInt() == 1
                    && record.has("source") && SOURCE.equals(record.get("source").getAsString());
            return ours && record.has("group") ? record.get("group").getAsString() : null;
        } catch (JsonParseException | IllegalStateException | UnsupportedOperationException | NumberFormatException notOurs) {
            return null;
        }
    }

    /** Now in UTC to the second, or SOURCE_DATE_EPOCH when set (reproducible output, as the bridge). */
    private static String created() {
        String epoch = System.getenv("SOURCE_DATE_EPOCH");
        Instant moment = epoch != null && epoch.matches("\\d+") ? Instant.ofEpochSecond(Long.parseLong(epoch)) : Instant.now();
        return DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss'Z'").withZone(ZoneOffset.UTC).format(moment);
    }
}
