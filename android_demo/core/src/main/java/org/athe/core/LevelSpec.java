package org.athe.core;

import java.util.Map;

/**
 * One level of the adaptive model (cheapest first in the manifest).
 *
 * @param name  level name, e.g. {@code simple}
 * @param heads attention heads kept
 * @param fuse  whether pruned tokens are fused
 * @param macs  multiply-accumulates of one inference
 * @param files artifact per format ({@code tflite}, {@code pte}, {@code pt2})
 */
public record LevelSpec(String name, int heads, boolean fuse, long macs, Map<String, Artifact> files) {
}
