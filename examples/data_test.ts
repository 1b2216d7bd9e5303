import { classCounts, loadDigits, parseDigits, splitTrainTest, subset } from "./data.ts";
import { partition } from "./partition.ts";
import { seededRandom } from "./random.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

Deno.test("loadDigits reads the 1,797 digits, scaled to [0, 1]", async () => {
  const digits = await loadDigits();
  assert(digits.count === 1797 && digits.dims === 64 && digits.classes === 10, "shape");
  assert(digits.features.length === 1797 * 64, "feature count");
  assert(digits.features.every((x) => x >= 0 && x <= 1), "feature range");
  const counts = classCounts(digits);
  assert(counts.join(",") === "178,182,177,183,181,182,181,179,174,180", `counts ${counts}`);
  // The first image is a zero: the 8×8 pixels of its top row.
  assert(digits.labels[0] === 0, "first label");
  assert(
    [...digits.features.subarray(0, 8)].map((x) => x * 16).join(",") === "0,0,5,13,9,1,0,0",
    "first row of the first image",
  );
});

Deno.test("parseDigits rejects a malformed row", () => {
  let error: unknown;
  try {
    parseDigits("1,2,3\n");
  } catch (caught) {
    error = caught;
  }
  assert(error instanceof SyntaxError, "expected a SyntaxError");
});

Deno.test("splitTrainTest and subset keep every sample once", () => {
  const { train, test } = splitTrainTest(100, 0.25, seededRandom(1));
  assert(train.length === 75 && test.length === 25, "sizes");
  const all = new Set([...train, ...test]);
  assert(all.size === 100, "disjoint and complete");
  const labels = Uint8Array.from({ length: 100 }, (_, i) => i % 10);
  const data = { features: new Float32Array(100), labels, count: 100, dims: 1, classes: 10 };
  const part = subset(data, [3, 14]);
  assert(part.count === 2 && part.labels[0] === 3 && part.labels[1] === 4, "subset");
});

Deno.test("partition deals every index to exactly one client", () => {
  const labels = Uint8Array.from({ length: 200 }, (_, i) => i % 10);
  const indices = Array.from({ length: 200 }, (_, i) => i);
  for (const kind of ["iid", "shards"] as const) {
    const parts = partition(indices, labels, { kind, clients: 4, random: seededRandom(3) });
    const seen = parts.flatMap((part) => [...part]);
    assert(seen.length === 200 && new Set(seen).size === 200, `${kind}: coverage`);
    assert(parts.every((part) => part.length === 50), `${kind}: sizes`);
    const classes = parts.map((part) => new Set([...part].map((i) => labels[i])).size);
    if (kind === "shards") {
      // Two shards of 25 label-sorted samples span at most 2 × 2 classes.
      assert(classes.every((n) => n <= 4), `shards: classes per client ${classes}`);
    } else {
      assert(classes.every((n) => n === 10), `iid: classes per client ${classes}`);
    }
  }
});
