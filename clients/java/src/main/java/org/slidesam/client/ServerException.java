package org.slidesam.client;

/**
 * The server refused a request. {@link #code()} is the gRPC status code's name (for example
 * {@code INVALID_ARGUMENT}), {@link #serverMessage()} the server's message saying what to change.
 */
public class ServerException extends RuntimeException {

    private final String code;
    private final String serverMessage;

    public ServerException(String code, String serverMessage) {
        super(code + ": " + serverMessage);
        this.code = code;
        this.serverMessage = serverMessage;
    }

    public String code() {
        return code;
    }

    public String serverMessage() {
        return serverMessage;
    }
}
