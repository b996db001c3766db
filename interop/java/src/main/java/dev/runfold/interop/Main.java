package dev.runfold.interop;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Command line of runfold's Java interop checker. Every command prints JSON (one object per
 * line) on stdout; problems with the data are reported in that JSON, not by the exit status.
 * Exit status 2: bad usage; 1: the check itself could not run (I/O, broker unreachable).
 *
 * <pre>
 * [--schemas DIR] fingerprints
 * [--schemas DIR] decode-events FILE          hex single-object Events, one per line
 * [--schemas DIR] encode-events OUT RUNS SEED Java-built runs, lines "hex TAB avro-json"
 * [--schemas DIR] encode-json IN OUT          Avro-JSON Events in, hex single-object out
 * [--schemas DIR] check-partitions BOOTSTRAP TOPIC N
 * [--schemas DIR] read-runs BOOTSTRAP TOPIC
 * </pre>
 */
public final class Main {
  private Main() {}

  public static void main(String[] argv) throws Exception {
    List<String> args = new ArrayList<>(List.of(argv));
    File schemaDir = new File("schemas/avro");
    if (args.size() >= 2 && args.get(0).equals("--schemas")) {
      schemaDir = new File(args.get(1));
      args = args.subList(2, args.size());
    }
    if (args.isEmpty()) {
      usage("no command");
    }
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    try {
      AvroSchemas schemas = new AvroSchemas(schemaDir);
      String command = args.get(0);
      List<String> rest = args.subList(1, args.size());
      switch (command) {
        case "fingerprints" -> fingerprints(schemas, out);
        case "decode-events" -> decodeEvents(schemas, Path.of(arg(rest, 0, "FILE")), out);
        case "encode-events" -> EventFactory.write(schemas, Path.of(arg(rest, 0, "OUT")),
            Integer.parseInt(arg(rest, 1, "RUNS")), Long.parseLong(arg(rest, 2, "SEED")), out);
        case "encode-json" -> encodeJson(schemas, Path.of(arg(rest, 0, "IN")),
            Path.of(arg(rest, 1, "OUT")), out);
        case "check-partitions" -> KafkaChecks.checkPartitions(schemas, arg(rest, 0, "BOOTSTRAP"),
            arg(rest, 1, "TOPIC"), Integer.parseInt(arg(rest, 2, "N")), out);
        case "read-runs" -> KafkaChecks.readRuns(schemas, arg(rest, 0, "BOOTSTRAP"),
            arg(rest, 1, "TOPIC"), out);
        default -> usage("unknown command " + command);
      }
    } catch (IOException | RuntimeException e) {
      out.flush();
      System.err.println("runfold-java-interop: " + e);
      System.exit(1);
    }
    out.flush();
  }

  private static String arg(List<String> args, int index, String name) {
    if (args.size() <= index) {
      usage("missing " + name);
    }
    return args.get(index);
  }

  private static void usage(String why) {
    System.err.println("runfold-java-interop: " + why + "\nusage: [--schemas DIR] "
        + "fingerprints | decode-events FILE | encode-events OUT RUNS SEED | encode-json IN OUT"
        + " | check-partitions BOOTSTRAP TOPIC N | read-runs BOOTSTRAP TOPIC");
    System.exit(2);
  }

  /** Java's fingerprint and Parsing Canonical Form of every current schema. */
  static void fingerprints(AvroSchemas schemas, PrintStream out) throws IOException {
    ObjectNode all = AvroSchemas.JSON.createObjectNode();
    for (var entry : schemas.current.entrySet()) {
      ObjectNode one = all.putObject(entry.getKey());
      one.put("version", schemas.versions.get(entry.getKey()));
      one.put("fullname", entry.getValue().getFullName());
      one.put("fingerprint_le_hex", AvroSchemas.hex(AvroSchemas.fingerprintLE(entry.getValue())));
      one.put("canonical_form",
          org.apache.avro.SchemaNormalization.toParsingForm(entry.getValue()));
    }
    out.println(AvroSchemas.JSON.writeValueAsString(all));
  }

  /**
   * Decode each hex line with BinaryMessageDecoder (header, fingerprint lookup and body are
   * Avro's), and report what Java sees: Avro JSON, logical values, payload parsed by Jackson,
   * and whether Avro's encoder writes the very same bytes back.
   */
  static void decodeEvents(AvroSchemas schemas, Path file, PrintStream out) throws IOException {
    Schema schema = schemas.schema("Event");
    BinaryMessageDecoder<Object> decoder = schemas.decoder("Event");
    BinaryMessageDecoder<Object> logical = schemas.logicalDecoder("Event");
    BinaryMessageEncoder<Object> encoder = schemas.encoder("Event");
    int line = 0;
    int decoded = 0;
    int failed = 0;
    int identical = 0;
    try (BufferedReader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      for (String text = reader.readLine(); text != null; text = reader.readLine()) {
        line++;
        if (text.isBlank()) {
          continue;
        }
        ObjectNode result = AvroSchemas.JSON.createObjectNode();
        result.put("line", line);
        try {
          byte[] data = AvroSchemas.unhex(text);
          GenericRecord record = (GenericRecord) decoder.decode(data);
          GenericRecord withLogical = (GenericRecord) logical.decode(data);
          byte[] again = AvroSchemas.bytes(encoder.encode(record));
          boolean same = AvroSchemas.sameBytes(data, again);
          result.put("ok", true);
          result.set("avro", schemas.avroJson(schema, record));
          result.put("kind_schema", ((GenericRecord) record.get("kind")).getSchema().getFullName());
          result.put("run_id_uuid", withLogical.get("run_id").toString());
          result.put("timestamp_instant", withLogical.get("timestamp").toString());
          result.put("reencoded_identical", same);
          if (!same) {
            result.put("reencoded_hex", AvroSchemas.hex(again));
          }
          JsonNode payload = AvroSchemas.JSON.readTree(record.get("payload").toString());
          result.set("payload_jackson", payload);
          decoded++;
          identical += same ? 1 : 0;
        } catch (Exception e) {
          result.put("ok", false);
          result.put("error", e.getClass().getName() + ": " + e.getMessage());
          failed++;
        }
        out.println(AvroSchemas.JSON.writeValueAsString(result));
      }
    }
    ObjectNode summary = AvroSchemas.JSON.createObjectNode();
    summary.putObject("summary")
        .put("decoded", decoded)
        .put("failed", failed)
        .put("reencoded_identical", identical);
    out.println(AvroSchemas.JSON.writeValueAsString(summary));
  }

  /** Events given in Avro's JSON encoding, read by Avro's JSON decoder, written single-object. */
  static void encodeJson(AvroSchemas schemas, Path in, Path outFile, PrintStream out)
      throws IOException {
    Schema schema = schemas.schema("Event");
    BinaryMessageEncoder<Object> encoder = schemas.encoder("Event");
    int count = 0;
    try (BufferedReader reader = Files.newBufferedReader(in, StandardCharsets.UTF_8);
        BufferedWriter writer = Files.newBufferedWriter(outFile, StandardCharsets.UTF_8)) {
      for (String text = reader.readLine(); text != null; text = reader.readLine()) {
        if (text.isBlank()) {
          continue;
        }
        Object datum = schemas.fromAvroJson(schema, text);
        writer.write(AvroSchemas.hex(AvroSchemas.bytes(encoder.encode(datum))));
        writer.newLine();
        count++;
      }
    }
    ObjectNode summary = AvroSchemas.JSON.createObjectNode();
    summary.putObject("summary").put("encoded", count);
    out.println(AvroSchemas.JSON.writeValueAsString(summary));
  }
}
