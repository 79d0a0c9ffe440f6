package org.slidesam.client;

import io.grpc.Metadata;
import io.grpc.Status;
import java.util.ArrayList;
import java.util.List;
import org.slidesam.v1.Box;
import org.slidesam.v1.ImageSource;
import org.slidesam.v1.PromptStrategy;
import org.slidesam.v1.Ring;
import org.slidesam.v1.SegmentationResult;
import org.slidesam.v1.StepError;
import org.slidesam.v1.UploadedImageRef;

/** Conversions between the plain Java types of this API and the generated protobuf messages. */
final class Messages {

    private static final Metadata.Key<String> RETRY_AFTER = Metadata.Key.of("retry-after-ms", Metadata.ASCII_STRING_MARSHALLER);

    private Messages() {
    }

    static org.slidesam.v1.FieldOfView fieldOfView(FieldOfView fov) {
        var message = org.slidesam.v1.FieldOfView.newBuilder().setRegion(rect(fov.region()));
        if (fov.image() instanceof ImageRef.Slide slide) {
            message.setImage(ImageSource.newBuilder().setSlideId(slide.slideId()));
        } else if (fov.image() instanceof ImageRef.Uploaded up) {
            message.setImage(ImageSource.newBuilder().setUploaded(UploadedImageRef.newBuilder()
                    .setSha256(up.image().sha256()).setOriginX(up.originX()).setOriginY(up.originY())
                    .setDownsample(up.downsample()).setMpp(up.mpp()).setObjectivePower(up.objectivePower())));
        }
        var resolution = org.slidesam.v1.Resolution.newBuilder();
        switch (fov.resolution().kind()) {
            case FIT -> { }
            case MPP -> message.setResolution(resolution.setMpp(fov.resolution().value()));
            case MAGNIFICATION -> message.setResolution(resolution.setMagnification(fov.resolution().value()));
            case DOWNSAMPLE -> message.setResolution(resolution.setDownsample(fov.resolution().value()));
        }
        message.setWindows(switch (fov.windows()) {
            case AUTO -> org.slidesam.v1.WindowMode.WINDOW_MODE_UNSPECIFIED;
            case MULTI -> org.slidesam.v1.WindowMode.WINDOW_MODE_MULTI;
            case SINGLE -> org.slidesam.v1.WindowMode.WINDOW_MODE_SINGLE;
        });
        return message.setAlignToGrid(fov.alignToGrid()).build();
    }

    static org.slidesam.v1.Rect rect(Rect rect) {
        return org.slidesam.v1.Rect.newBuilder()
                .setX(rect.x()).setY(rect.y()).setWidth(rect.width()).setHeight(rect.height()).build();
    }

    static Box box(Rect rect) {
        return Box.newBuilder().setX(rect.x()).setY(rect.y()).setWidth(rect.width()).setHeight(rect.height()).build();
    }

    static org.slidesam.v1.Click click(Click click) {
        return org.slidesam.v1.Click.newBuilder().setX(click.x()).setY(click.y()).setPositive(click.positive()).build();
    }

    static org.slidesam.v1.PolygonOptions polygonOptions(PolygonOptions options) {
        return org.slidesam.v1.PolygonOptions.newBuilder()
                .setSimplifyToleranceUm(options.simplifyToleranceUm()).setSimplifyTolerancePx(options.simplifyTolerancePx())
                .setMaxVertices(options.maxVertices()).setMinAreaUm2(options.minAreaUm2()).setMinAreaPx(options.minAreaPx())
                .build();
    }

    static PromptStrategy strategy(Strategy strategy) {
        return switch (strategy) {
            case DEFAULT -> PromptStrategy.PROMPT_STRATEGY_UNSPECIFIED;
            case PLAIN -> PromptStrategy.PROMPT_STRATEGY_PLAIN;
            case CONSISTENT -> PromptStrategy.PROMPT_STRATEGY_CONSISTENT;
        };
    }

    static Result result(SegmentationResult raw) {
        var polygons = new ArrayList<Polygon>(raw.getPolygonsCount());
        for (var polygon : raw.getPolygonsList()) {
            var holes = new ArrayList<double[]>(polygon.getHolesCount());
            for (Ring hole : polygon.getHolesList()) {
                holes.add(ring(hole));
            }
            polygons.add(new Polygon(ring(polygon.getExterior()), holes));
        }
        List<Click> clicks = raw.getClicksList().stream().map(c -> new Click(c.getX(), c.getY(), c.getPositive())).toList();
        Box box = raw.hasBox() ? raw.getBox() : null;
        var t = raw.getTimings();
        return new Result(
                raw.getObjectId(), polygons, raw.getScore(), raw.getAreaPx(), raw.getMppKnown() ? raw.getAreaUm2() : Double.NaN,
                raw.getModelId(), clicks, box == null ? null : new Rect(box.getX(), box.getY(), box.getWidth(), box.getHeight()),
                raw.getStep(), raw.getCanUndo(), raw.getCanRedo(),
                new Rect(raw.getRegion().getX(), raw.getRegion().getY(), raw.getRegion().getWidth(), raw.getRegion().getHeight()),
                raw.getDownsample(),
                new Result.Timings(t.getReadMs(), t.getEncodeMs(), t.getDecodeMs(), t.getPostprocessMs(), t.getTotalMs(),
                        t.getQueueMs(), t.getCacheHit(), t.getWindowsEncoded(), t.getWindowsFromStore()),
                raw.hasResolution() ? resolution(raw.getResolution()) : null);
    }

    static ModelResolution resolution(org.slidesam.v1.ModelResolution r) {
        return new ModelResolution(r.getRequestedDownsample(), positiveOrNaN(r.getRequestedMpp()), r.getEncoderDownsample(),
                positiveOrNaN(r.getEncoderMpp()), r.getDownsampled(), r.getWindows(), r.getWindowsDecoded(),
                positiveOrNaN(r.getCoarseDownsample()));
    }

    private static double positiveOrNaN(double value) {
        return value > 0 ? value : Double.NaN;
    }

    static ModelInfo modelInfo(org.slidesam.v1.ModelInfo m) {
        return new ModelInfo(m.getName(), m.getArchitecture(), m.getInputSize(), m.getCheckpointSha256(), m.getDevice(),
                m.getLoaded(), m.getIsDefault(), m.getAvailable(), m.getDescription());
    }

    /** A step error of the interactive stream, as the exception a failed call would give. */
    static ServerException error(StepError error) {
        return new ServerException(Status.fromCodeValue(error.getCode()).getCode().name(), error.getMessage(),
                error.getRetryAfterMs());
    }

    /** A failed call, with the retry hint of its trailing metadata. */
    static ServerException error(Throwable failure) {
        Status status = Status.fromThrowable(failure);
        Metadata trailers = Status.trailersFromThrowable(failure);
        String retryAfter = trailers == null ? null : trailers.get(RETRY_AFTER);
        return new ServerException(status.getCode().name(), status.getDescription() == null ? "" : status.getDescription(),
                retryAfter == null ? 0 : Long.parseLong(retryAfter));
    }

    private static double[] ring(Ring ring) {
        double[] xy = new double[ring.getXyCount()];
        for (int i = 0; i < xy.length; i++) {
            xy[i] = ring.getXy(i);
        }
        return xy;
    }
}
