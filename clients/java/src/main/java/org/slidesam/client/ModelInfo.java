package org.slidesam.client;

/** A model the server can run (see the proto's ModelInfo). */
public record ModelInfo(String name, String architecture, int inputSize, String checkpointSha256, String device,
                        boolean loaded, boolean isDefault, boolean available, String description) {
}
