package dev.runfold.interop;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.UUID;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Runs built on the JVM, independently of runfold's producers: what an analytics or agent
 * process written in Java would publish. Each run walks every middle variant once, in an
 * order runfold's fold accepts, and ends by completion, failure or cancellation in turn, so
 * three runs cover all 16 variants. Timestamps carry nanoseconds; one run starts before
 * 1970 (negative nanoseconds); payloads (written by Jackson) hold unicode, escapes, floats
 * and integers beyond 2^53.
 */
final class EventFactory {
  private static final long START_2026 = 1_767_225_600_000_000_000L;
  private static final String UNICODE = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \uD83D\uDE80";

  private EventFactory() {}

  static void write(AvroSchemas schemas, Path outFile, int runs, long seed, PrintStream out)
      throws IOException {
    Schema event = schemas.schema("Event");
    BinaryMessageEncoder<Object> encoder = schemas.encoder("Event");
    int count = 0;
    try (BufferedWriter writer = Files.newBufferedWriter(outFile, StandardCharsets.UTF_8)) {
      for (int r = 0; r < runs; r++) {
        for (GenericRecord record : run(event, r, new SplittableRandom(seed * 1_000_003L + r))) {
          writer.write(AvroSchemas.hex(AvroSchemas.bytes(encoder.encode(record))));
          writer.write('\t');
          writer.write(AvroSchemas.JSON.writeValueAsString(schemas.avroJson(event, record)));
          writer.newLine();
          count++;
        }
      }
    }
    ObjectNode summary = AvroSchemas.JSON.createObjectNode();
    summary.putObject("summary").put("runs", runs).put("encoded", count);
    out.println(AvroSchemas.JSON.writeValueAsString(summary));
  }

  private static List<GenericRecord> run(Schema event, int index, SplittableRandom rnd) {
    UUID runId = new UUID((rnd.nextLong() & ~0xF000L) | 0x4000L,
        (rnd.nextLong() & 0x3FFF_FFFF_FFFF_FFFFL) | 0x8000_0000_0000_0000L);
    // Run 1 starts in 1969: a negative timestamp-nanos must survive the zig-zag varint.
    long base = index == 1 ? -86_400_000_000_000L : START_2026 + index * 3_600_000_000_000L;
    long[] clock = {base + 1 + rnd.nextInt(999_999)};
    String node = "plan-" + index;
    String checkpoint = "cp-" + Long.toHexString(rnd.nextLong());
    List<GenericRecord> events = new ArrayList<>();
    Builder b = new Builder(event, runId, clock, rnd, events);

    ObjectNode inputs = AvroSchemas.JSON.createObjectNode();
    inputs.put("prompt", UNICODE);
    inputs.put("temperature", 0.7);
    inputs.put("tiny", 1e-7);
    inputs.put("huge", 1.5e300);
    inputs.put("big_int", 9_007_199_254_740_993L);
    inputs.put("escapes", "quote\" backslash\\ tab\t nl\n nul\u0000");
    ObjectNode started = AvroSchemas.JSON.createObjectNode();
    started.put("agent_spec_digest", "sha256:java-spec-" + index);
    started.put("git_sha", String.format("%040x", index + 0xabcL));
    started.set("inputs", inputs);
    started.put("graph_name", "java-graph");
    started.put("entry_point", node);
    b.add("GraphStarted", started);
    b.add("NodeEntered", obj("input_tokens", 12), "node_id", node, "iteration", 1L);
    b.add("ToolCalled", obj("args", UNICODE), "tool_name", "search \u2192 web");
    b.add("ToolFailed", obj("error", "timeout"), "tool_name", "search \u2192 web");
    b.add("NodeRetrying", obj("backoff", 1.25), "node_id", node, "attempt", 4_294_967_295L,
        "delay_ms", Long.MAX_VALUE);
    b.add("ToolReturned", obj("bytes", 4096), "tool_name", "search \u2192 web");
    b.add("MessageAdded", obj("score", -0.0), "role", "assistant", "content_length", 0L);
    ArrayNode keys = AvroSchemas.JSON.createArrayNode();
    b.add("StateUpdated", AvroSchemas.JSON.createObjectNode().set("keys", keys), "node_id", node,
        "keys_changed", List.of("messages", "\u00fcber", ""));
    b.add("CheckpointSaved", obj("size", 3.14159), "checkpoint_id", checkpoint, "node_id", node);
    b.add("GraphInterrupted", obj("question", "approve? \u2705"), "reason", "human_review",
        "node_id", node);
    b.add("CheckpointRestored", obj("approved", true), "checkpoint_id", checkpoint,
        "node_id", node);
    b.add("CheckpointDeleted", obj("why", "superseded"), "checkpoint_id", checkpoint);
    b.add("NodeFailed", obj("retryable", false), "node_id", node, "error", "bo\u00efte noire");
    b.add("NodeExited", obj("ms", 12.5), "node_id", node, "next_node", null, "duration_ms", 7L);
    switch (index % 3) {
      case 0 -> {
        ObjectNode done = AvroSchemas.JSON.createObjectNode();
        done.set("outputs", obj("answer", UNICODE + " = 42.0"));
        done.put("final_state_digest", "sha256:final-" + index);
        b.add("GraphCompleted", done, "iterations", 1L,
            "duration_ms", (clock[0] + 1_000 - base) / 1_000_000);
      }
      case 1 -> b.add("GraphFailed", AvroSchemas.JSON.createObjectNode(), "error",
          "node " + node + " failed: \u26a0 rate limited");
      default -> b.add("GraphInterrupted", obj("detail", "cancelled by operator"),
          "reason", "cancelled", "node_id", node);
    }
    return events;
  }

  private static ObjectNode obj(String key, Object value) {
    ObjectNode node = AvroSchemas.JSON.createObjectNode();
    node.set(key, AvroSchemas.JSON.valueToTree(value));
    return node;
  }

  /** Numbers events 1, 2, 3... and advances the clock by a random number of nanoseconds. */
  private static final class Builder {
    private final Schema event;
    private final UUID runId;
    private final long[] clock;
    private final SplittableRandom rnd;
    private final List<GenericRecord> events;

    Builder(Schema event, UUID runId, long[] clock, SplittableRandom rnd, List<GenericRecord> events) {
      this.event = event;
      this.runId = runId;
      this.clock = clock;
      this.rnd = rnd;
      this.events = events;
    }

    void add(String variant, ObjectNode payload, Object... fields) {
      Schema kindSchema = event.getField("kind").schema().getTypes().stream()
          .filter(s -> s.getName().equals(variant)).findFirst()
          .orElseThrow(() -> new IllegalArgumentException("no variant " + variant));
      GenericData.Record kind = new GenericData.Record(kindSchema);
      for (int i = 0; i < fields.length; i += 2) {
        kind.put((String) fields[i], fields[i + 1]);
      }
      GenericData.Record record = new GenericData.Record(event);
      record.put("run_id", runId.toString());
      record.put("seq", (long) events.size() + 1);
      record.put("timestamp", clock[0]);
      record.put("kind", kind);
      try {
        record.put("payload", AvroSchemas.JSON.writeValueAsString(payload));
      } catch (IOException e) {
        throw new IllegalStateException(e);
      }
      clock[0] += 1 + rnd.nextInt(1_000_000_000);
      events.add(record);
    }
  }
}
