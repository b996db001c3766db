package dev.runfold.interop;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Conversions;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.Encoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * runfold's .avsc files as Apache Avro's Java library reads them, and Avro's own
 * single-object codec ({@link BinaryMessageEncoder}/{@link BinaryMessageDecoder}) over them.
 *
 * <p>Nothing here knows runfold's wire rules: the header, fingerprint and body are all
 * Avro's. Two data models are used: plain {@link GenericData} (what a JVM consumer without
 * generated classes gets, and what re-encodes byte for byte), and one with the uuid and
 * timestamp-nanos conversions, to show the logical values Java sees.
 */
final class AvroSchemas {
  static final ObjectMapper JSON = new ObjectMapper();

  private static final Pattern FILE_NAME = Pattern.compile("([A-Za-z_][A-Za-z0-9_]*)\\.v([1-9][0-9]*)\\.avsc");

  /** Current (highest) version of each schema, by its file name ("Event", "RunState", ...). */
  final Map<String, Schema> current = new LinkedHashMap<>();
  final Map<String, Integer> versions = new LinkedHashMap<>();
  private final GenericData plain = new GenericData();
  private final GenericData logical = new GenericData();

  AvroSchemas(File dir) throws IOException {
    logical.addLogicalTypeConversion(new Conversions.UUIDConversion());
    logical.addLogicalTypeConversion(new TimeConversions.TimestampNanosConversion());
    File[] files = dir.listFiles();
    if (files == null) {
      throw new IOException("no schema directory at " + dir.getAbsolutePath());
    }
    Map<String, File> newest = new HashMap<>();
    for (File file : files) {
      Matcher m = FILE_NAME.matcher(file.getName());
      if (!m.matches()) {
        continue;
      }
      int version = Integer.parseInt(m.group(2));
      if (version > versions.getOrDefault(m.group(1), 0)) {
        versions.put(m.group(1), version);
        newest.put(m.group(1), file);
      }
    }
    if (newest.isEmpty()) {
      throw new IOException("no <Name>.v<N>.avsc files in " + dir.getAbsolutePath());
    }
    parseInDependencyOrder(newest);
  }

  /**
   * One parser for all current versions, so "type": "runfold.Run" in RunState resolves. A
   * file that names a type not yet defined is moved behind the others and everything is
   * parsed again with a fresh parser (Avro's parser does not defer undefined names).
   */
  private void parseInDependencyOrder(Map<String, File> files) throws IOException {
    List<String> order = new ArrayList<>(files.keySet());
    order.sort(Comparator.naturalOrder());
    for (int attempt = 0; attempt <= order.size() * order.size(); attempt++) {
      Schema.Parser parser = new Schema.Parser();
      Map<String, Schema> parsed = new LinkedHashMap<>();
      String failed = null;
      AvroRuntimeException why = null;
      for (String name : order) {
        try {
          parsed.put(name, parser.parse(files.get(name)));
        } catch (AvroRuntimeException e) { // SchemaParseException, AvroTypeException ("Undefined schema")
          failed = name;
          why = e;
          break;
        }
      }
      if (failed == null) {
        for (String name : files.keySet().stream().sorted().toList()) {
          current.put(name, parsed.get(name));
        }
        return;
      }
      order.remove(failed);
      order.add(failed);
      if (attempt == order.size() * order.size()) {
        throw new IOException("cannot parse " + files.get(failed) + ": " + why.getMessage(), why);
      }
    }
  }

  Schema schema(String name) {
    Schema schema = current.get(name);
    if (schema == null) {
      throw new IllegalArgumentException("no schema " + name + " in " + current.keySet());
    }
    return schema;
  }

  /** CRC-64-AVRO of the Parsing Canonical Form, little-endian, as in the single-object header. */
  static byte[] fingerprintLE(Schema schema) {
    long fp = SchemaNormalization.parsingFingerprint64(schema);
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(fp).array();
  }

  BinaryMessageDecoder<Object> decoder(String name) {
    return new BinaryMessageDecoder<>(plain, schema(name));
  }

  BinaryMessageDecoder<Object> logicalDecoder(String name) {
    return new BinaryMessageDecoder<>(logical, schema(name));
  }

  BinaryMessageEncoder<Object> encoder(String name) {
    return new BinaryMessageEncoder<>(plain, schema(name));
  }

  /** Avro's own JSON encoding of a datum (unions as {"branch": value}), as a Jackson tree. */
  JsonNode avroJson(Schema schema, Object datum) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    Encoder encoder = EncoderFactory.get().jsonEncoder(schema, out);
    new GenericDatumWriter<Object>(schema, plain).write(datum, encoder);
    encoder.flush();
    return JSON.readTree(out.toString(StandardCharsets.UTF_8));
  }

  /** The datum in Avro's JSON encoding, read with Avro's own JSON decoder. */
  Object fromAvroJson(Schema schema, String json) throws IOException {
    return new GenericDatumReader<Object>(schema, schema, plain)
        .read(null, DecoderFactory.get().jsonDecoder(schema, json));
  }

  static byte[] bytes(ByteBuffer buffer) {
    byte[] out = new byte[buffer.remaining()];
    buffer.duplicate().get(out);
    return out;
  }

  static String hex(byte[] data) {
    return HexFormat.of().formatHex(data);
  }

  static byte[] unhex(String text) {
    return HexFormat.of().parseHex(text.strip());
  }

  static boolean sameBytes(byte[] a, byte[] b) {
    return Arrays.equals(a, b);
  }
}
