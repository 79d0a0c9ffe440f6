package org.slidesam.client;

import java.util.ArrayList;
import java.util.List;
import org.slidesam.v1.AddClicks;
import org.slidesam.v1.Finish;
import org.slidesam.v1.InteractRequest;
import org.slidesam.v1.InteractResponse;
import org.slidesam.v1.OpenObject;
import org.slidesam.v1.Redo;
import org.slidesam.v1.Reset;
import org.slidesam.v1.SetBox;
import org.slidesam.v1.Undo;

/**
 * An object being segmented by clicks on one field of view. Every step returns the object's current
 * result or throws {@link ServerException} (the object then stays as it was). The session keeps its
 * history: when the stream drops it reconnects and replays it, so a network blip or a server restart
 * loses nothing. Not thread-safe: one thread drives a session.
 */
public final class ObjectSession implements AutoCloseable {

    private final SlidesamClient client;
    private final FieldOfView fov;
    private final OpenObject.Builder open;
    private final List<InteractRequest> history = new ArrayList<>();
    private InteractStream stream;
    private int reconnects;
    private Result result;

    ObjectSession(SlidesamClient client, FieldOfView fov, ObjectOptions options) {
        this.client = client;
        this.fov = fov;
        this.open = OpenObject.newBuilder()
                .setFieldOfView(Messages.fieldOfView(fov))
                .setModel(options.model())
                .setPolygonOptions(Messages.polygonOptions(options.polygonOptions()))
                .setStrategy(Messages.strategy(options.strategy()));
        try {
            this.result = retrying(this::connect);
        } catch (RuntimeException error) {
            close();
            throw error;
        }
        open.setObjectId(result.objectId());
    }

    public FieldOfView fieldOfView() {
        return fov;
    }

    public String objectId() {
        return open.getObjectId();
    }

    /** The latest result (after open: the empty object). */
    public Result result() {
        return result;
    }

    /** How often the session reconnected and replayed its history. */
    public int reconnects() {
        return reconnects;
    }

    public Result click(double x, double y, boolean positive) {
        return addClicks(List.of(new Click(x, y, positive)));
    }

    /** Adds one or several clicks as one step. */
    public Result addClicks(List<Click> clicks) {
        var message = AddClicks.newBuilder();
        clicks.forEach(click -> message.addClicks(Messages.click(click)));
        return step(InteractRequest.newBuilder().setClicks(message).build());
    }

    public Result box(Rect box) {
        return step(InteractRequest.newBuilder().setBox(SetBox.newBuilder().setBox(Messages.box(box))).build());
    }

    public Result undo() {
        return step(InteractRequest.newBuilder().setUndo(Undo.getDefaultInstance()).build());
    }

    public Result redo() {
        return step(InteractRequest.newBuilder().setRedo(Redo.getDefaultInstance()).build());
    }

    /** Clears every prompt (undoable). */
    public Result reset() {
        return step(InteractRequest.newBuilder().setReset(Reset.getDefaultInstance()).build());
    }

    /** The final result; the stream is closed afterwards. */
    public Result finish() {
        Result last = step(InteractRequest.newBuilder().setFinish(Finish.getDefaultInstance()).build());
        close();
        return last;
    }

    @Override
    public void close() {
        if (stream != null) {
            stream.close();
            stream = null;
        }
    }

    private interface Operation {
        Result run() throws InteractStream.Broken;
    }

    private Result step(InteractRequest request) {
        return retrying(() -> {
            if (stream == null || stream.failed()) {
                close();
                connect();
            }
            Result next = checked(stream.send(request, client.callTimeout()));
            history.add(request);
            result = next;
            return next;
        });
    }

    /** Runs the operation, reconnecting and replaying the history when the stream breaks. */
    private Result retrying(Operation operation) {
        int attempts = client.options().reconnectAttempts();
        for (int attempt = 0; attempt <= attempts; attempt++) {
            try {
                return operation.run();
            } catch (InteractStream.Broken broken) {
                close();
                sleep(Math.min(200L << attempt, 2000L));
            }
        }
        throw new ConnectionLostException(
                "lost the server at " + client.options().address() + " after " + attempts + " reconnects");
    }

    /** Waits for the server, opens a stream and the object (uploading its pixels if the server lacks them), replays the history. */
    private Result connect() throws InteractStream.Broken {
        client.waitReady();
        stream = client.openStream(fov.image().affinityKey());
        Result replayed = openObject();
        for (InteractRequest request : history) {
            replayed = checked(stream.send(request, client.callTimeout()));
        }
        if (!history.isEmpty()) {
            reconnects++;
        }
        return replayed;
    }

    private Result openObject() throws InteractStream.Broken {
        var request = InteractRequest.newBuilder().setOpen(open).build();
        try {
            return checked(stream.send(request, client.callTimeout()));
        } catch (ServerException error) {
            if (!(fov.image() instanceof ImageRef.Uploaded uploaded) || !error.code().equals("NOT_FOUND")) {
                throw error;
            }
            client.upload(uploaded.image());
            return checked(stream.send(request, client.callTimeout()));
        }
    }

    private static Result checked(InteractResponse response) {
        if (response.hasError()) {
            throw Messages.error(response.getError());
        }
        return Messages.result(response.getResult());
    }

    private static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException interrupted) {
            Thread.currentThread().interrupt();
            throw new ConnectionLostException("interrupted while reconnecting");
        }
    }
}
