package org.slidesam.client;

import java.nio.file.Path;
import java.time.Duration;

/**
 * How to reach a server. Only the address is required; the rest has "with" methods:
 * <pre>{@code ConnectOptions.to("gpu-box:50051").withToken(token).withTrustCertificate(Path.of("ca.pem"))}</pre>
 *
 * @param token             sent as {@code authorization: Bearer <token>} on every call; null or empty: none
 *                          (default: the environment variable SLIDESAM_TOKEN, as the Python client)
 * @param tls               encrypt the connection; implied by a trust certificate
 * @param trustCertificate  PEM certificate(s) to trust instead of the system's trust store (self-signed servers)
 * @param clientCertificate PEM certificate chain presented to servers that ask for one (mutual TLS)
 * @param clientKey         its PKCS#8 PEM private key ({@code openssl pkcs8 -topk8 -nocrypt} converts others)
 * @param readyTimeout      how long a (re)connection waits for the server before ConnectionLostException
 * @param callTimeout       the longest wait for any one answer
 * @param reconnectAttempts how often an object session reconnects (and replays its history) before giving up
 */
public record ConnectOptions(String address, String token, boolean tls, Path trustCertificate, Path clientCertificate,
                             Path clientKey, Duration readyTimeout, Duration callTimeout, int reconnectAttempts) {

    public ConnectOptions {
        if (address == null || address.isBlank()) {
            throw new IllegalArgumentException("the server address is empty (expected host:port)");
        }
        if ((clientCertificate == null) != (clientKey == null)) {
            throw new IllegalArgumentException("mutual TLS needs both a client certificate and its key");
        }
        tls = tls || trustCertificate != null || clientCertificate != null;
    }

    /** Plaintext, the token in $SLIDESAM_TOKEN if any, 10 s to connect, 300 s per answer, 5 reconnection attempts. */
    public static ConnectOptions to(String address) {
        return new ConnectOptions(address, System.getenv("SLIDESAM_TOKEN"), false, null, null, null, Duration.ofSeconds(10), Duration.ofSeconds(300), 5);
    }

    public ConnectOptions withToken(String newToken) {
        return new ConnectOptions(address, newToken, tls, trustCertificate, clientCertificate, clientKey, readyTimeout,
                callTimeout, reconnectAttempts);
    }

    /** TLS with the system's trust store (for a certificate issued by a public authority). */
    public ConnectOptions withTls() {
        return new ConnectOptions(address, token, true, trustCertificate, clientCertificate, clientKey, readyTimeout,
                callTimeout, reconnectAttempts);
    }

    public ConnectOptions withTrustCertificate(Path pem) {
        return new ConnectOptions(address, token, true, pem, clientCertificate, clientKey, readyTimeout, callTimeout,
                reconnectAttempts);
    }

    public ConnectOptions withClientCertificate(Path certificatePem, Path keyPem) {
        return new ConnectOptions(address, token, true, trustCertificate, certificatePem, keyPem, readyTimeout,
                callTimeout, reconnectAttempts);
    }

    public ConnectOptions withTimeouts(Duration ready, Duration call) {
        return new ConnectOptions(address, token, tls, trustCertificate, clientCertificate, clientKey, ready, call,
                reconnectAttempts);
    }

    boolean hasToken() {
        return token != null && !token.isEmpty();
    }
}
