package org.athe.core;

import java.util.List;
import java.util.Locale;

/**
 * A parsed dispatch policy ({@code athe.runtime.dispatcher.parse_policy}) for the policies the
 * phone runs: {@code exit} (the stage chain with its gates; the default for bundles with stages),
 * {@code exit:<stage>} (always that exit), {@code router} and {@code fixed:<level>}. Python's
 * evaluation policies ({@code random:...}, {@code oracle}) are refused. Messages are Python's,
 * without its "Did you mean" hint.
 *
 * @param kind  {@code exit}, {@code fixed-exit}, {@code router} or {@code fixed}
 * @param text  the string it was parsed from
 * @param stage the stage of {@code fixed-exit}, else null
 * @param level the level of {@code fixed}, else null
 */
public record Policy(String kind, String text, String stage, String level) {
    /** The policies the phone runs. */
    public static final String PHONE_POLICIES = "exit, exit:<stage>, router, fixed:<level>";

    /** Whether the policy runs the stage chain ({@code exit} or {@code exit:<stage>}). */
    public boolean chain() {
        return "exit".equals(kind) || "fixed-exit".equals(kind);
    }

    /**
     * @throws DispatchException an unknown policy, stage or level, with the valid forms
     */
    public static Policy parse(String text, List<String> levelNames, List<String> stageNames) {
        String raw = text.trim();
        int colon = raw.indexOf(':');
        String kind = (colon < 0 ? raw : raw.substring(0, colon)).trim().toLowerCase(Locale.ROOT);
        String arg = colon < 0 ? "" : raw.substring(colon + 1);
        String q = Py.str(text);
        switch (kind) {
            case "exit": {
                if (stageNames.isEmpty()) {
                    throw new DispatchException("policy " + q + ": this bundle has no stage chain; policies on the "
                            + "phone: router, fixed:<level> (re-convert with a variant that declares stages for exits)");
                }
                String stage = arg.trim();
                if (stage.isEmpty()) {
                    return new Policy("exit", text, null, null);
                }
                if (!stageNames.contains(stage)) {
                    throw new DispatchException("policy " + q + ": no stage " + Py.str(stage) + "; stages: "
                            + String.join(", ", stageNames) + ".");
                }
                return new Policy("fixed-exit", text, stage, null);
            }
            case "router":
                if (!arg.isEmpty()) {
                    throw new DispatchException("policy " + q + ": 'router' takes no argument; policies on the phone: "
                            + PHONE_POLICIES);
                }
                return new Policy("router", text, null, null);
            case "fixed": {
                String level = arg.trim();
                if (!levelNames.contains(level)) {
                    throw new DispatchException("policy " + q + ": no level " + Py.str(level) + "; levels: "
                            + String.join(", ", levelNames) + ".");
                }
                return new Policy("fixed", text, null, level);
            }
            case "random":
            case "oracle":
                throw new DispatchException("policy " + q + " is not available on the phone (an evaluation policy "
                        + "of 'athe eval'); policies on the phone: " + PHONE_POLICIES);
            default:
                throw new DispatchException("unknown policy " + q + "; policies on the phone: " + PHONE_POLICIES + ".");
        }
    }
}
