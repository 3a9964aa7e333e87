package org.athe.core;

import java.util.Arrays;
import java.util.List;

/**
 * A stage's gate ready to score one image: {@code athe.runtime.gates.CompiledGate}, the form the
 * Python dispatcher uses (the standardisation folded into the weights), computed in double from
 * the float32 logits with the same operations in the same order: numpy's pairwise sum for the
 * softmax total, {@code log(total) - sum(e * z) / total} for the entropy, {@code z} clipped to
 * [-60, 60] before the sigmoid. {@link StrictMath} (fdlibm) keeps the result identical on every JVM.
 *
 * <pre>{@code
 * ExitGate g = ExitGate.compile(stage.gate());
 * double score = g.score(logits, g.needsCls() ? cls : null);   // exit when score >= stage.threshold()
 * }</pre>
 */
public final class ExitGate {
    /** The softmax features, in order; {@code cls} may also appear. */
    public static final List<String> SOFTMAX_FEATURES = List.of("max_prob", "margin", "entropy");

    private final String kind;
    private final boolean needsCls;
    private final double bias;
    private final double[] wSoft = new double[3];
    private final double[] wCls;

    private ExitGate(GateSpec spec) {
        this.kind = spec.kind();
        this.needsCls = spec.features().contains("cls");
        double[] cls = null;
        double folded = 0.0;
        if ("logistic".equals(kind)) {
            double[] w = new double[spec.weights().length];
            for (int i = 0; i < w.length; i++) {
                w[i] = spec.weights()[i] / spec.std()[i];
            }
            for (int i = 0; i < w.length; i++) {
                folded += w[i] * spec.mean()[i];
            }
            int scalars = 0;
            for (String f : spec.features()) {
                if (!"cls".equals(f)) {
                    scalars++;
                }
            }
            int at = 0;
            for (String name : spec.features()) {
                int k = SOFTMAX_FEATURES.indexOf(name);
                if (k >= 0) {
                    wSoft[k] += w[at];
                    at++;
                } else if ("cls".equals(name)) {
                    cls = Arrays.copyOfRange(w, at, at + w.length - scalars); // one weight per CLS value
                    at += cls.length;
                } else {
                    throw new DispatchException("unknown gate feature " + Py.str(name) + "; known: "
                            + Py.tuple(List.of("max_prob", "margin", "entropy", "cls")));
                }
            }
        }
        this.bias = spec.bias() - folded;
        this.wCls = cls;
    }

    /** Compile {@code spec} once (the dispatcher does this per stage when it opens). */
    public static ExitGate compile(GateSpec spec) {
        return new ExitGate(spec);
    }

    /** Whether {@link #score} reads the stage's CLS token. */
    public boolean needsCls() {
        return needsCls;
    }

    /** How many CLS values the gate reads (0 without {@code cls}). */
    public int clsWidth() {
        return wCls == null ? 0 : wCls.length;
    }

    /**
     * The gate score of one exit.
     *
     * @param logits the stage's exit logits
     * @param cls    its CLS token ({@code tokens[0, 0]}), or null when {@link #needsCls()} is false
     * @throws DispatchException the gate reads the CLS token and none (or one of another width) is given
     */
    public double score(float[] logits, float[] cls) {
        double[] f = softmaxFeatures(logits);
        if ("max_softmax".equals(kind)) {
            return f[0];
        }
        double s = bias + wSoft[0] * f[0] + wSoft[1] * f[1] + wSoft[2] * f[2];
        if (wCls != null) {
            if (cls == null) {
                throw new DispatchException("this gate reads the CLS token; pass the stage's tokens");
            }
            if (cls.length != wCls.length) {
                throw new DispatchException("the gate reads " + wCls.length + " CLS values but the stage's CLS token has "
                        + cls.length + "; re-convert the bundle");
            }
            double dot = 0.0;
            for (int i = 0; i < cls.length; i++) {
                dot += wCls[i] * cls[i];
            }
            s += dot;
        }
        return 1.0 / (1.0 + StrictMath.exp(-Math.min(Math.max(s, -60.0), 60.0)));
    }

    /**
     * {@code athe.runtime.gates.softmax_features} of one exit: {@code [max_prob, margin, entropy]}
     * (top softmax probability, top-1 minus top-2, entropy in nats).
     */
    public static double[] softmaxFeatures(float[] logits) {
        int n = logits.length;
        if (n == 0) {
            throw new DispatchException("the stage returned no logits; re-convert the bundle");
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double[] e = new double[n];
        double[] ez = new double[n];
        double a = Double.NEGATIVE_INFINITY;
        double b = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            double z = logits[i] - max;
            e[i] = StrictMath.exp(z);
            ez[i] = e[i] * z;
            if (e[i] > a) {
                b = a;
                a = e[i];
            } else if (e[i] > b) {
                b = e[i];
            }
        }
        double total = pairwiseSum(e, 0, n);
        double p1 = n > 1 ? a / total : 1.0;
        double margin = n > 1 ? p1 - b / total : 1.0;
        return new double[] {p1, margin, StrictMath.log(total) - pairwiseSum(ez, 0, n) / total};
    }

    /** numpy's float64 sum of a 1-D array: pairwise, 8 accumulators per block of up to 128. */
    static double pairwiseSum(double[] a, int start, int n) {
        if (n < 8) {
            double res = 0.0;
            for (int i = 0; i < n; i++) {
                res += a[start + i];
            }
            return res;
        }
        if (n <= 128) {
            double[] r = Arrays.copyOfRange(a, start, start + 8);
            int i = 8;
            for (; i < n - (n % 8); i += 8) {
                for (int j = 0; j < 8; j++) {
                    r[j] += a[start + i + j];
                }
            }
            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < n; i++) {
                res += a[start + i];
            }
            return res;
        }
        int n2 = n / 2;
        n2 -= n2 % 8;
        return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
    }
}
