package org.slidesam.client;

/** Which of SAM's candidate masks each step keeps (see the proto's PromptStrategy). */
public enum Strategy {
    /** The server's default. */
    DEFAULT,
    /** SAM as published. */
    PLAIN,
    /** Every click honoured. */
    CONSISTENT
}
