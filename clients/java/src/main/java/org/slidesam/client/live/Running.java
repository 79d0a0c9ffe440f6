package org.slidesam.client.live;

/**
 * The live client running in this JVM (QuPath loads this jar once), so that running the QuPath
 * script again replaces the running client instead of adding a second one.
 */
public final class Running {

    private static AutoCloseable current;

    private Running() {
    }

    /** Stops the running client, if any, and records the new one (null: none). */
    public static synchronized void replace(AutoCloseable next) throws Exception {
        AutoCloseable previous = current;
        current = next;
        if (previous != null) {
            previous.close();
        }
    }
}
