package org.slidesam.client;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.netty.handler.ssl.H2AlpnClientContext;
import io.netty.handler.ssl.SslContext;
import java.io.File;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLException;

/** Builds the channel for a set of options: plaintext or TLS (optionally mutual), bearer token on every call. */
final class Channels {

    private static final int MAX_MESSAGE_BYTES = 64 << 20;
    private static final Metadata.Key<String> AUTHORIZATION = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private Channels() {
    }

    static ManagedChannel open(ConnectOptions options) {
        var builder = NettyChannelBuilder.forTarget(options.address())
                .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                .keepAliveTime(20, TimeUnit.SECONDS)
                .keepAliveTimeout(10, TimeUnit.SECONDS);
        if (options.tls()) {
            builder.sslContext(sslContext(options));
        } else {
            builder.usePlaintext();
        }
        if (options.hasToken()) {
            var headers = new Metadata();
            headers.put(AUTHORIZATION, "Bearer " + options.token());
            builder.intercept(MetadataUtils.newAttachHeadersInterceptor(headers));
        }
        return builder.build();
    }

    private static SslContext sslContext(ConnectOptions options) {
        try {
            return H2AlpnClientContext.build(file(options.trustCertificate()), file(options.clientCertificate()),
                    file(options.clientKey()));
        } catch (SSLException | IllegalArgumentException error) {
            throw new IllegalArgumentException("cannot use the TLS certificates or key: " + error.getMessage(), error);
        }
    }

    private static File file(Path path) {
        return path == null ? null : path.toFile();
    }
}
