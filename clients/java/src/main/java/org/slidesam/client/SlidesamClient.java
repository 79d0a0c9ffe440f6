package org.slidesam.client;

import com.google.protobuf.ByteString;
import io.grpc.ConnectivityState;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.slidesam.v1.ListModelsRequest;
import org.slidesam.v1.SegmentationGrpc;
import org.slidesam.v1.UploadImageRequest;

/**
 * A connection to one slidesam server; thread-safe. Object sessions opened from it each hold their
 * own stream. Close it when done (try-with-resources).
 */
public final class SlidesamClient implements AutoCloseable {

    /** Metadata naming the image a call works on, for a load balancer's consistent hashing (see ImageRef.affinityKey). */
    static final Metadata.Key<String> AFFINITY = Metadata.Key.of("slidesam-affinity", Metadata.ASCII_STRING_MARSHALLER);

    private final ConnectOptions options;
    private final ManagedChannel channel;
    private final SegmentationGrpc.SegmentationBlockingStub blocking;
    private final SegmentationGrpc.SegmentationStub async;

    public SlidesamClient(ConnectOptions options) {
        this.options = options;
        this.channel = Channels.open(options);
        this.blocking = SegmentationGrpc.newBlockingStub(channel);
        this.async = SegmentationGrpc.newStub(channel);
    }

    /** A plaintext connection without a token. */
    public SlidesamClient(String address) {
        this(ConnectOptions.to(address));
    }

    public ConnectOptions options() {
        return options;
    }

    /** Blocks until the channel is connected; ConnectionLostException after the ready timeout. */
    public void waitReady() {
        long deadline = System.nanoTime() + options.readyTimeout().toNanos();
        ConnectivityState state = channel.getState(true);
        while (state != ConnectivityState.READY) {
            long left = deadline - System.nanoTime();
            if (state == ConnectivityState.SHUTDOWN || left <= 0) {
                throw new ConnectionLostException("no slidesam server answered at " + options.address());
            }
            var changed = new CountDownLatch(1);
            channel.notifyWhenStateChanged(state, changed::countDown);
            try {
                changed.await(left, TimeUnit.NANOSECONDS);
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
                throw new ConnectionLostException("interrupted while connecting to " + options.address());
            }
            state = channel.getState(true);
        }
    }

    public List<ModelInfo> listModels() {
        return unary("", stub -> stub.listModels(ListModelsRequest.getDefaultInstance()))
                .getModelsList().stream().map(Messages::modelInfo).toList();
    }

    /** Sends encoded pixels; the server keeps them under their SHA-256. */
    public UploadResult upload(EncodedImage image) {
        var reply = unary(image.sha256(), stub -> stub.uploadImage(UploadImageRequest.newBuilder()
                .setData(ByteString.copyFrom(image.dataUnsafe())).setSha256(image.sha256()).build()));
        return new UploadResult(reply.getSha256(), reply.getWidth(), reply.getHeight(), reply.getAlreadyPresent());
    }

    /** Opens an object on a field of view; the server embeds the region now, so the clicks that follow are fast. */
    public ObjectSession openObject(FieldOfView fov, ObjectOptions objectOptions) {
        return new ObjectSession(this, fov, objectOptions);
    }

    public ObjectSession openObject(FieldOfView fov) {
        return openObject(fov, ObjectOptions.DEFAULT);
    }

    @Override
    public void close() {
        channel.shutdown();
        try {
            if (!channel.awaitTermination(2, TimeUnit.SECONDS)) {
                channel.shutdownNow();
            }
        } catch (InterruptedException interrupted) {
            channel.shutdownNow();
            Thread.currentThread().interrupt();
        }
    }

    /** A new Interact stream for an object on the image whose affinity key is given. */
    InteractStream openStream(String affinityKey) {
        return new InteractStream(withAffinity(async, affinityKey));
    }

    Duration callTimeout() {
        return options.callTimeout();
    }

    /** The stub with the image's affinity key attached to its calls (none for calls on no image). */
    private static <S extends AbstractStub<S>> S withAffinity(S stub, String affinityKey) {
        if (affinityKey.isEmpty()) {
            return stub;
        }
        var headers = new Metadata();
        headers.put(AFFINITY, affinityKey);
        return stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    }

    private <T> T unary(String affinityKey, Function<SegmentationGrpc.SegmentationBlockingStub, T> call) {
        try {
            return call.apply(withAffinity(blocking, affinityKey).withWaitForReady()
                    .withDeadlineAfter(options.callTimeout().toMillis(), TimeUnit.MILLISECONDS));
        } catch (StatusRuntimeException error) {
            throw Messages.error(error);
        }
    }
}
