package org.slidesam.client.live;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.slidesam.client.ConnectionLostException;
import org.slidesam.client.EncodedImage;
import org.slidesam.client.FieldOfView;
import org.slidesam.client.ImageRef;
import org.slidesam.client.ModelInfo;
import org.slidesam.client.Rect;
import org.slidesam.client.Resolution;
import org.slidesam.client.Result;
import org.slidesam.client.ServerException;
import org.slidesam.client.SlidesamClient;

/**
 * The live client of one image: whenever its prompt annotations change, each prompt group that
 * changed is brought up to date on the server ({@link LiveObject}) and its result handed back as the
 * annotation the bridge would write. Work runs on one background thread; when prompts change faster
 * than the server answers, only the latest state is segmented.
 */
public final class LiveSegmenter implements AutoCloseable {

    /** A snapshot of the image's prompts and of the viewer, as {@link #submit} takes it. */
    private record Snapshot(List<PromptAnnotation> annotations, View view) {
    }

    private final SlidesamClient client;
    private final LiveImage image;
    private final LiveSettings settings;
    private final SlideMap slideMap;
    private final Consumer<ResultAnnotation> onResult;
    private final Consumer<String> onProblem;
    private final Map<String, LiveObject> objects = new HashMap<>();
    private final Map<String, PromptGroup> done = new HashMap<>();
    private final ExecutorService worker = Executors.newSingleThreadExecutor(runnable -> {
        var thread = new Thread(runnable, "slidesam-live");
        thread.setDaemon(true);
        return thread;
    });
    private final AtomicReference<Snapshot> pending = new AtomicReference<>();
    private Map<String, String> checkpoints;
    private Set<String> reported = Set.of();
    private Set<String> problems = new LinkedHashSet<>();
    private volatile String lastGroup;

    /**
     * @param onResult  receives each new result (on the background thread)
     * @param onProblem receives what went wrong, each message once while it lasts
     */
    public LiveSegmenter(SlidesamClient client, LiveImage image, LiveSettings settings, SlideMap slideMap,
                         Consumer<ResultAnnotation> onResult, Consumer<String> onProblem) {
        this.client = client;
        this.image = image;
        this.settings = settings;
        this.slideMap = slideMap;
        this.onResult = onResult;
        this.onProblem = onProblem;
    }

    /** Takes the groups present now as done: they are segmented only once they change. */
    public void baseline(List<PromptAnnotation> annotations) {
        worker.execute(() -> PromptGroups.find(annotations, settings.classes()).groups().forEach(g -> done.put(g.name(), g)));
    }

    /** Segments, in the background, every group that changed since it was last segmented (latest snapshot wins). */
    public void submit(List<PromptAnnotation> annotations, View view) {
        pending.set(new Snapshot(List.copyOf(annotations), view));
        worker.execute(() -> {
            Snapshot latest = pending.getAndSet(null);
            if (latest == null) {
                return;
            }
            try {
                apply(latest.annotations(), latest.view()).forEach(onResult);
            } catch (RuntimeException unexpected) {
                onProblem.accept("slidesam: " + unexpected);
            }
        });
    }

    /**
     * What {@link #submit} runs, synchronously: the results of the groups that changed. Problems go to
     * onProblem, each once while it lasts. Not for use while submit is in flight.
     */
    public List<ResultAnnotation> apply(List<PromptAnnotation> annotations, View view) {
        problems = new LinkedHashSet<>();
        PromptGroups.Found found = PromptGroups.find(annotations, settings.classes());
        found.problems().forEach(this::report);
        var present = new LinkedHashSet<String>();
        var results = new ArrayList<ResultAnnotation>();
        for (PromptGroup group : found.groups()) {
            present.add(group.name());
            if (group.equals(done.get(group.name()))) {
                continue;
            }
            String outside = PromptGroups.outsideImage(group, image.width(), image.height());
            if (outside != null) {
                report(outside);
                continue;
            }
            ResultAnnotation result = segment(group, view);
            if (result != null) {
                results.add(result);
            }
        }
        objects.entrySet().removeIf(entry -> {
            boolean gone = !present.contains(entry.getKey());
            if (gone) {
                entry.getValue().close();
            }
            return gone;
        });
        done.keySet().retainAll(present);
        problems.stream().filter(message -> !reported.contains(message)).forEach(onProblem);
        reported = problems;
        return results;
    }

    /**
     * The edit that takes the last click of the group segmented last away; applied in QuPath, the
     * hierarchy change makes the server undo that click. Null when there is nothing to undo.
     */
    public PromptGroups.PointsEdit undoEdit(List<PromptAnnotation> annotations) {
        String group = lastGroup;
        return group == null ? null : PromptGroups.withoutLastClick(annotations, settings.classes(), group);
    }

    private ResultAnnotation segment(PromptGroup group, View view) {
        LiveObject object = objects.computeIfAbsent(group.name(), name -> new LiveObject(client, settings.objectOptions()));
        try {
            Result result = object.sync(group, g -> fieldOfView(g, view));
            done.put(group.name(), group);
            lastGroup = group.name();
            ResultAnnotation annotation = ResultAnnotation.of(group, result, settings, object.region(), checkpoint(result));
            if (annotation == null) {
                report(group.resultName() + ": SAM found no object");
            }
            return annotation;
        } catch (ServerException | ConnectionLostException | IllegalArgumentException | UncheckedIOException error) {
            done.remove(group.name());
            report(group.label() + ": " + error.getMessage());
            return null;
        }
    }

    /** The image region for a group: by slide id when the slide map names it, else its pixels, read here and uploaded. */
    private FieldOfView fieldOfView(PromptGroup group, View view) {
        Rect region = Regions.choose(group, view, image.width(), image.height(), settings.fov());
        String slideId = slideMap.slideId(image.localPath(), image.uri());
        if (slideId != null) {
            return new FieldOfView(ImageRef.slide(slideId), region, settings.fov().resolution(), settings.fov().windows(),
                    settings.fov().alignToGrid());
        }
        if (image.pixels() == null) {
            throw new IllegalArgumentException(image.name() + ": no slide map names it on the server, and its pixels cannot be read here");
        }
        double downsample = Regions.downsample(region, settings.fov().resolution(), image.mpp(), image.objectivePower());
        try {
            var pixels = image.pixels().read(region, downsample);
            double actual = region.width() / pixels.getWidth();
            var uploaded = new ImageRef.Uploaded(EncodedImage.png(pixels), region.x(), region.y(), actual, image.mpp(),
                    image.objectivePower());
            return new FieldOfView(uploaded, region, Resolution.downsample(actual), settings.fov().windows(), false);
        } catch (IOException error) {
            throw new UncheckedIOException("cannot read the pixels of " + image.name() + ": " + error.getMessage(), error);
        }
    }

    private String checkpoint(Result result) {
        if (checkpoints == null) {
            checkpoints = new HashMap<>();
            for (ModelInfo model : client.listModels()) {
                checkpoints.put(model.name(), model.checkpointSha256());
            }
        }
        return checkpoints.getOrDefault(result.modelId().split("@")[0], "");
    }

    private void report(String message) {
        problems.add(message);
    }

    /** Waits until the work submitted so far is done and its results handed to onResult (never call it from onResult). */
    public void awaitIdle() throws InterruptedException {
        try {
            worker.submit(() -> { }).get();
        } catch (ExecutionException impossible) {
            throw new IllegalStateException(impossible);
        }
    }

    /** Closes every object's stream once the work in hand is done, and stops the background thread. */
    @Override
    public void close() {
        pending.set(null);
        worker.execute(() -> {
            objects.values().forEach(LiveObject::close);
            objects.clear();
        });
        worker.shutdown();
    }
}
