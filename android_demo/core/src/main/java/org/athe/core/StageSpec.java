package org.athe.core;

import java.util.List;
import java.util.Map;

/**
 * One stage artifact of the exit chain ({@code athe.runtime.manifest.StageSpec}).
 *
 * @param name           stage name, e.g. {@code s1}
 * @param blocks         {@code [start, stop)} backbone blocks it runs
 * @param keep           token keep ratio on entry (1.0: none)
 * @param fuse           whether pruned tokens are fused
 * @param heads          attention heads
 * @param tokens         tokens inside the stage, CLS included (its {@code tokens} output has this many)
 * @param macs           multiply-accumulates of the stage
 * @param inputs         tensor names ({@code image}, {@code tokens}, {@code scores}) in the artifact's order
 * @param outputs        tensor names ({@code tokens}, {@code scores}, {@code logits}) in the artifact's order
 * @param tokenSelection {@code none} or {@code in-graph} (top-k inside the artifact: the runtime only
 *                       passes tensors through)
 * @param files          artifact per format
 * @param gate           the exit gate, null for the last stage
 * @param threshold      the gate's threshold, null for the last stage
 */
public record StageSpec(String name, int[] blocks, double keep, boolean fuse, int heads, int tokens, long macs,
                        List<String> inputs, List<String> outputs, String tokenSelection,
                        Map<String, Artifact> files, GateSpec gate, Double threshold) {
}
