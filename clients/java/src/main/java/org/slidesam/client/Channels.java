package org.slidesam.client;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import java.io.IOException;
import java.util.concurrent.TimeUnit;

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
        SslContextBuilder ssl = GrpcSslContexts.forClient();
        if (options.trustCertificate() != null) {
            ssl.trustManager(options.trustCertificate().toFile());
        }
        if (options.clientCertificate() != null) {
            ssl.keyManager(options.clientCertificate().toFile(), options.clientKey().toFile());
        }
        try {
            return ssl.build();
        } catch (IOException | IllegalArgumentException error) {
            throw new IllegalArgumentException("cannot use the TLS certificates or key: " + error.getMessage(), error);
        }
    }
}
