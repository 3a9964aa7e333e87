package org.athe.core;

/**
 * One model file of one format, as the manifest lists it.
 *
 * @param path      file name relative to the bundle folder
 * @param sha256    hex digest, verified by {@link Bundle#open} before loading
 * @param bytes     file size
 * @param precision {@code fp32}, {@code int8-dynamic} or {@code int8-static}
 */
public record Artifact(String path, String sha256, long bytes, String precision) {
}
