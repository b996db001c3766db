package dev.runfold.interop;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Consumer;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.utils.Utils;

/** The checks that read a topic with Kafka's own Java consumer. */
final class KafkaChecks {
  private static final Duration READ_DEADLINE = Duration.ofSeconds(120);
  private static final int MAX_LISTED = 20;

  private KafkaChecks() {}

  /**
   * Every record of TOPIC must sit on the partition the Java producer would pick for its key:
   * BuiltInPartitioner.partitionForKey, i.e. toPositive(murmur2(key)) % numPartitions. Also
   * decodes every value with Avro's BinaryMessageDecoder.
   */
  static void checkPartitions(AvroSchemas schemas, String bootstrap, String topic,
      int expectedPartitions, PrintStream out) throws IOException {
    BinaryMessageDecoder<Object> decoder = schemas.decoder("Event");
    ObjectNode summary = AvroSchemas.JSON.createObjectNode();
    ArrayNode mismatches = AvroSchemas.JSON.createArrayNode();
    ArrayNode undecodable = AvroSchemas.JSON.createArrayNode();
    Map<String, Set<Integer>> partitionsOfKey = new HashMap<>();
    Map<Integer, Integer> perPartition = new TreeMap<>();
    int[] counts = new int[5]; // records, matched, mismatched, decoded, null keys
    int partitions = read(bootstrap, topic, record -> {
      counts[0]++;
      perPartition.merge(record.partition(), 1, Integer::sum);
      byte[] key = record.key();
      if (key == null) {
        counts[4]++;
      } else {
        int expected = BuiltInPartitioner.partitionForKey(key, expectedPartitions);
        // The same rule spelled out, in case the internal helper ever changes its meaning.
        int formula = Utils.toPositive(Utils.murmur2(key)) % expectedPartitions;
        String text = new String(key, StandardCharsets.UTF_8);
        partitionsOfKey.computeIfAbsent(text, k -> new HashSet<>()).add(record.partition());
        if (expected == record.partition() && formula == expected) {
          counts[1]++;
        } else {
          counts[2]++;
          if (mismatches.size() < MAX_LISTED) {
            mismatches.addObject().put("key", text).put("partition", record.partition())
                .put("offset", record.offset()).put("java_partition", expected)
                .put("java_formula", formula);
          }
        }
      }
      try {
        decoder.decode(record.value());
        counts[3]++;
      } catch (Exception e) {
        if (undecodable.size() < MAX_LISTED) {
          undecodable.addObject().put("partition", record.partition())
              .put("offset", record.offset())
              .put("error", e.getClass().getName() + ": " + e.getMessage());
        }
      }
    });
    summary.put("topic", topic);
    summary.put("partitions", partitions);
    summary.put("expected_partitions", expectedPartitions);
    summary.put("records", counts[0]);
    summary.put("keys", partitionsOfKey.size());
    summary.put("null_keys", counts[4]);
    summary.put("placed_as_java", counts[1]);
    summary.put("misplaced", counts[2]);
    summary.put("keys_on_several_partitions",
        partitionsOfKey.values().stream().filter(s -> s.size() > 1).count());
    summary.put("decoded", counts[3]);
    summary.put("undecodable", counts[0] - counts[3]);
    ObjectNode spread = summary.putObject("records_per_partition");
    perPartition.forEach((p, n) -> spread.put(String.valueOf(p), n));
    summary.set("mismatches", mismatches);
    summary.set("undecodable_examples", undecodable);
    out.println(AvroSchemas.JSON.writeValueAsString(summary));
  }

  /**
   * Every value of the runs topic as a runfold.RunSummary (holding the runfold.Run): the
   * published record of agent-runs (the service's whole RunState is in its internal changelog).
   */
  static void readRuns(AvroSchemas schemas, String bootstrap, String topic, PrintStream out)
      throws IOException {
    Schema schema = schemas.schema("RunSummary");
    BinaryMessageDecoder<Object> decoder = schemas.decoder("RunSummary");
    BinaryMessageDecoder<Object> logical = schemas.logicalDecoder("RunSummary");
    int[] counts = new int[3]; // records, decoded, tombstones
    List<String> lines = new ArrayList<>();
    read(bootstrap, topic, record -> {
      counts[0]++;
      ObjectNode line = AvroSchemas.JSON.createObjectNode();
      line.put("key", record.key() == null ? null : new String(record.key(), StandardCharsets.UTF_8));
      line.put("partition", record.partition());
      line.put("offset", record.offset());
      if (record.value() == null) {
        counts[2]++;
        line.put("ok", true).putNull("avro");
      } else {
        try {
          GenericRecord state = (GenericRecord) decoder.decode(record.value());
          GenericRecord run = (GenericRecord) ((GenericRecord) logical.decode(record.value()))
              .get("run");
          line.put("ok", true);
          line.set("avro", schemas.avroJson(schema, state));
          line.put("run_id_uuid", run.get("run_id").toString());
          line.put("started_at_instant", run.get("started_at").toString());
          Object finished = run.get("finished_at");
          line.put("finished_at_instant", finished == null ? null : finished.toString());
          counts[1]++;
        } catch (Exception e) {
          line.put("ok", false).put("error", e.getClass().getName() + ": " + e.getMessage());
        }
      }
      try {
        lines.add(AvroSchemas.JSON.writeValueAsString(line));
      } catch (IOException e) {
        throw new IllegalStateException(e);
      }
    });
    lines.forEach(out::println);
    ObjectNode summary = AvroSchemas.JSON.createObjectNode();
    summary.putObject("summary").put("topic", topic).put("records", counts[0])
        .put("decoded", counts[1]).put("tombstones", counts[2])
        .put("failed", counts[0] - counts[1] - counts[2]);
    out.println(AvroSchemas.JSON.writeValueAsString(summary));
  }

  /**
   * Reads every committed record of every partition of TOPIC, from the beginning to the end
   * offsets taken at the start (read_committed: runfold writes agent-runs transactionally, and
   * aborted records must not count). Returns the topic's partition count.
   */
  private static int read(String bootstrap, String topic,
      Consumer<ConsumerRecord<byte[], byte[]>> each) throws IOException {
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.CLIENT_ID_CONFIG, "runfold-java-interop");
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
      if (infos == null || infos.isEmpty()) {
        throw new IOException("topic " + topic + " does not exist at " + bootstrap);
      }
      List<TopicPartition> assigned = new ArrayList<>();
      for (PartitionInfo info : infos) {
        assigned.add(new TopicPartition(topic, info.partition()));
      }
      consumer.assign(assigned);
      consumer.seekToBeginning(assigned);
      Map<TopicPartition, Long> end = consumer.endOffsets(assigned, Duration.ofSeconds(30));
      long deadline = System.nanoTime() + READ_DEADLINE.toNanos();
      while (!caughtUp(consumer, end)) {
        if (System.nanoTime() > deadline) {
          throw new IOException("could not read " + topic + " to its end offsets " + end
              + " within " + READ_DEADLINE.toSeconds() + "s");
        }
        for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
          if (record.offset() < end.get(new TopicPartition(topic, record.partition()))) {
            each.accept(record);
          }
        }
      }
      return infos.size();
    }
  }

  private static boolean caughtUp(KafkaConsumer<byte[], byte[]> consumer,
      Map<TopicPartition, Long> end) {
    for (Map.Entry<TopicPartition, Long> entry : end.entrySet()) {
      if (consumer.position(entry.getKey()) < entry.getValue()) {
        return false;
      }
    }
    return true;
  }
}
