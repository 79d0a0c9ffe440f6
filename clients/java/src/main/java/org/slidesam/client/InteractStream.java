package org.slidesam.client;

import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.time.Duration;
import java.util.EnumSet;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.slidesam.v1.InteractRequest;
import org.slidesam.v1.InteractResponse;
import org.slidesam.v1.SegmentationGrpc;

/** One Interact call: each request is answered by exactly one response carrying its request id. */
final class InteractStream {

    /** The stream is gone (network, server restart); the session reconnects and replays. */
    static final class Broken extends Exception {
        Broken(String message) {
            super(message);
        }
    }

    private static final Object COMPLETED = new Object();
    private static final Set<Status.Code> RECONNECTABLE =
            EnumSet.of(Status.Code.UNAVAILABLE, Status.Code.CANCELLED, Status.Code.UNKNOWN, Status.Code.INTERNAL);

    private final BlockingQueue<Object> replies = new LinkedBlockingQueue<>();
    private ClientCallStreamObserver<InteractRequest> requests;
    private long lastId;
    private boolean failed;

    InteractStream(SegmentationGrpc.SegmentationStub stub) {
        stub.withWaitForReady().interact(new ClientResponseObserver<InteractRequest, InteractResponse>() {
            @Override
            public void beforeStart(ClientCallStreamObserver<InteractRequest> call) {
                requests = call;
            }

            @Override
            public void onNext(InteractResponse response) {
                replies.add(response);
            }

            @Override
            public void onError(Throwable error) {
                replies.add(error);
            }

            @Override
            public void onCompleted() {
                replies.add(COMPLETED);
            }
        });
    }

    /** Sends a request and waits (at most timeout) for its answer. */
    InteractResponse send(InteractRequest request, Duration timeout) throws Broken {
        long id = ++lastId;
        requests.onNext(request.toBuilder().setRequestId(id).build());
        Object reply;
        try {
            reply = replies.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (InterruptedException interrupted) {
            Thread.currentThread().interrupt();
            throw new ServerException("CANCELLED", "interrupted while waiting for the server");
        }
        if (reply == null) {
            failed = true;
            throw new ServerException("DEADLINE_EXCEEDED", "no answer within " + timeout.toSeconds() + " s");
        }
        if (reply == COMPLETED) {
            throw new Broken("the server closed the stream");
        }
        if (reply instanceof Throwable error) {
            failed = true;
            Status status = Status.fromThrowable(error);
            if (RECONNECTABLE.contains(status.getCode())) {
                throw new Broken(status.getCode() + ": " + status.getDescription());
            }
            throw Messages.error(error);
        }
        var response = (InteractResponse) reply;
        if (response.getRequestId() != id) {
            throw new Broken("reply " + response.getRequestId() + " does not answer request " + id);
        }
        return response;
    }

    /** Whether the call ended with an error or went unanswered: the next step needs a new stream. */
    boolean failed() {
        return failed;
    }

    /** Half-closes and cancels the call; safe to call on a broken stream. */
    void close() {
        try {
            requests.onCompleted();
        } catch (IllegalStateException alreadyClosed) {
            // the call ended already
        }
        requests.cancel("closed by the client", null);
    }
}
