import { strict as assert } from "node:assert";
import { configFromEnv, resolveConfig } from "../../sync/config";

describe("sync/config", () => {
  const env = { CLUSTER_NAME: "comfyui-dev", NODE_POOLS: " gpu, gpu-large ,", MODELS_BUCKET: "models-b", AWS_REGION: "us-east-1" };

  it("reads the environment and applies defaults", () => {
    assert.deepEqual(configFromEnv(env), {
      clusterName: "comfyui-dev",
      nodePools: ["gpu", "gpu-large"],
      modelsBucket: "models-b",
      region: "us-east-1",
      commandTimeoutSeconds: 900,
      maxAttempts: 3,
      pollIntervalMs: 3000,
    });
  });

  it("reads the optional tuning variables", () => {
    const c = configFromEnv({ ...env, COMMAND_TIMEOUT_SECONDS: "600", MAX_ATTEMPTS: "2", POLL_INTERVAL_MS: "1000" });
    assert.equal(c.commandTimeoutSeconds, 600);
    assert.equal(c.maxAttempts, 2);
    assert.equal(c.pollIntervalMs, 1000);
    assert.throws(() => configFromEnv({ ...env, MAX_ATTEMPTS: "two" }), /MAX_ATTEMPTS must be a whole number/);
  });

  it("names every missing variable", () => {
    assert.throws(
      () => configFromEnv({ NODE_POOLS: " , ", AWS_REGION: "us-east-1" }),
      (err: Error) => {
        assert.match(err.message, /missing environment variable\(s\): CLUSTER_NAME, MODELS_BUCKET, NODE_POOLS/);
        return true;
      },
    );
    assert.throws(() => configFromEnv({}), /CLUSTER_NAME, NODE_POOLS, MODELS_BUCKET, AWS_REGION/);
  });

  it("rejects out-of-range settings all at once", () => {
    assert.throws(
      () => resolveConfig({ clusterName: "c", nodePools: [], modelsBucket: "b", region: "r", commandTimeoutSeconds: 5, maxAttempts: 0 }),
      (err: Error) => {
        assert.match(err.message, /nodePools/);
        assert.match(err.message, /commandTimeoutSeconds/);
        assert.match(err.message, /maxAttempts/);
        return true;
      },
    );
  });
});
