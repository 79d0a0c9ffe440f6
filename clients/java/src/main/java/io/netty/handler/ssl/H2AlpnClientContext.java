package io.netty.handler.ssl;

import io.netty.handler.codec.http2.Http2SecurityUtil;
import java.io.File;
import javax.net.ssl.SSLException;

/**
 * A client TLS context of netty's JDK provider that negotiates HTTP/2 ("h2") by ALPN, as gRPC requires.
 *
 * <p>Debian's netty 4.1.48 drops ALPN from the JDK provider (its JdkSslContext refuses an ALPN
 * ApplicationProtocolConfig, so grpc-netty's GrpcSslContexts fails with "JDK provider does not support
 * ALPN protocol") but keeps Java9SslEngine, which speaks ALPN through the JDK's own SSLEngine API
 * (Java 9 and later). This class connects the two. It sits in netty's package because Java9SslEngine
 * and the JdkSslContext constructor that takes a negotiator are package-private; the jar build
 * relocates it together with netty (org.slidesam.shaded.io.netty.handler.ssl).
 */
public final class H2AlpnClientContext {

    private H2AlpnClientContext() {
    }

    /**
     * @param trustCertificates PEM certificates to trust; null: the JDK's trust store
     * @param clientCertificate PEM chain for mutual TLS, with its PKCS#8 PEM key; both null: none
     */
    @SuppressWarnings("deprecation")  // JdkApplicationProtocolNegotiator: deprecated in netty, the only way to Java9SslEngine
    public static SslContext build(File trustCertificates, File clientCertificate, File clientKey) throws SSLException {
        SslContextBuilder builder = SslContextBuilder.forClient()
                .sslProvider(SslProvider.JDK)
                .ciphers(Http2SecurityUtil.CIPHERS, SupportedCipherSuiteFilter.INSTANCE)
                .trustManager(trustCertificates);
        if (clientCertificate != null) {
            builder.keyManager(clientCertificate, clientKey);
        }
        JdkSslContext base = (JdkSslContext) builder.build();
        JdkApplicationProtocolNegotiator h2 = new JdkBaseApplicationProtocolNegotiator(
                (engine, negotiator, isServer) -> new Java9SslEngine(engine, negotiator, isServer),
                JdkBaseApplicationProtocolNegotiator.FAIL_SELECTOR_FACTORY,
                JdkBaseApplicationProtocolNegotiator.FAIL_SELECTION_LISTENER_FACTORY,
                ApplicationProtocolNames.HTTP_2);
        return new JdkSslContext(base.context(), true, base.cipherSuites(), IdentityCipherSuiteFilter.INSTANCE, h2,
                ClientAuth.NONE, null, false);
    }
}
