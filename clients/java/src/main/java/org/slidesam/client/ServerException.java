package org.slidesam.client;

/**
 * The server refused a request. {@link #code()} is the gRPC status code's name (for example
 * {@code INVALID_ARGUMENT}), {@link #serverMessage()} the server's message saying what to change.
 */
public class ServerException extends RuntimeException {

    private final String code;
    private final String serverMessage;
    private final long retryAfterMillis;

    public ServerException(String code, String serverMessage) {
        this(code, serverMessage, 0);
    }

    public ServerException(String code, String serverMessage, long retryAfterMillis) {
        super(code + ": " + serverMessage);
        this.code = code;
        this.serverMessage = serverMessage;
        this.retryAfterMillis = retryAfterMillis;
    }

    public String code() {
        return code;
    }

    public String serverMessage() {
        return serverMessage;
    }

    /** With RESOURCE_EXHAUSTED: how long the server asks to wait before sending again; 0 without a hint. */
    public long retryAfterMillis() {
        return retryAfterMillis;
    }
}
