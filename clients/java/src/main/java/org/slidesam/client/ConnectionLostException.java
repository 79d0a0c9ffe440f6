package org.slidesam.client;

/** The server stayed unreachable through every reconnection attempt. */
public class ConnectionLostException extends RuntimeException {

    public ConnectionLostException(String message) {
        super(message);
    }
}
