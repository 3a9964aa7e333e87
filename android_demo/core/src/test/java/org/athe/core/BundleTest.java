package org.athe.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Opening a bundle verifies every artifact of the format before anything loads it. */
public class BundleTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private File bundle() throws IOException {
        return TestBundles.write(tmp.newFolder("b"), TestBundles.manifest());
    }

    private static void assertRefused(File folder, String format, String contains) {
        try {
            Bundle.open(folder, format);
            fail("opened; expected '" + contains + "'");
        } catch (BundleException e) {
            assertTrue("'" + e.getMessage() + "' lacks '" + contains + "'", e.getMessage().contains(contains));
        }
    }

    @Test
    public void validBundleOpensForEachFormat() throws IOException {
        File folder = bundle();
        for (String fmt : new String[] {"tflite", "pte"}) {
            Bundle b = Bundle.open(folder, fmt);
            assertEquals(fmt, b.format());
            assertEquals(new File(folder, "router." + fmt), b.artifactFile("router"));
            assertEquals(new File(folder, "dense." + fmt), b.artifactFile("dense"));
        }
    }

    @Test
    public void tamperedArtifactIsRefusedNamingTheFile() throws IOException {
        File folder = bundle();
        File file = new File(folder, "complex.tflite");
        byte[] data = Files.readAllBytes(file.toPath());
        data[3] ^= (byte) 0xFF; // same size, different content
        TestBundles.write(file, data);
        assertRefused(folder, "tflite", "complex tflite artifact");
        assertRefused(folder, "tflite", "failed sha256 verification");
        Bundle.open(folder, "pte"); // the .pte files are fine: a phone that copied only them loads
    }

    @Test
    public void truncatedAndMissingArtifactsAreRefused() throws IOException {
        File folder = bundle();
        TestBundles.write(new File(folder, "simple.pte"), new byte[3]);
        assertRefused(folder, "pte", "is truncated (3 bytes, manifest says");
        assertTrue(new File(folder, "router.tflite").delete());
        assertRefused(folder, "tflite", "router tflite artifact");
        assertRefused(folder, "tflite", "is missing");
    }

    @Test
    public void formatTheBundleLacksListsWhatItHas() throws IOException {
        Map<String, Object> m = TestBundles.manifest();
        for (Object lv : Json.asArray(m.get("levels"), "levels")) {
            Json.asObject(Json.asObject(lv, "lv").get("files"), "files").remove("pte");
        }
        File folder = TestBundles.write(tmp.newFolder("t"), m);
        assertRefused(folder, "pte", "lacks format(s) pte (it has: tflite)");
        assertRefused(folder, "onnx", "unknown format(s) ['onnx']");
    }

    @Test
    public void badManifestAndMissingFolder() throws IOException {
        File folder = bundle();
        TestBundles.write(new File(folder, "manifest.json"), "{not json".getBytes("UTF-8"));
        assertRefused(folder, "tflite", "is not valid JSON");
        assertTrue(new File(folder, "manifest.json").delete());
        assertRefused(folder, "tflite", "needs manifest.json");
        assertRefused(new File(folder, "nowhere"), "tflite", "not found");
    }

    @Test
    public void unknownOwnerIsRefused() throws IOException {
        try {
            Bundle.open(bundle(), "tflite").artifactFile("medium");
            fail("found a level that does not exist");
        } catch (BundleException e) {
            assertTrue(e.getMessage().contains("has no level 'medium'; levels: simple, complex, dense"));
        }
    }
}
