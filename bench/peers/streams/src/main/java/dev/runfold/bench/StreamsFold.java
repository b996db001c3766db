package dev.runfold.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * runfold's fold written for Kafka Streams, as a Kafka team would: the events topic grouped
 * by its key (the run id, so no repartition), one {@code aggregate} per run into a KTable
 * kept in RocksDB with its changelog, {@code processing.guarantee=exactly_once_v2}.
 *
 * <p>The fold is the benchmark's peer fold ({@code bench/peers/peer_fold.py}): apply
 * {@code seq == last_seq + 1}, count duplicates ({@code seq <= last_seq}), count a gap as a
 * violation and apply it, count anything after a terminal status as a violation. Values are
 * decoded with Apache Avro's {@link BinaryMessageDecoder} (single-object framing: header,
 * fingerprint check, body) or, with {@code --framing confluent}, by skipping the 5-byte
 * Confluent header and reading the body with the same schema (what Confluent's
 * KafkaAvroDeserializer does after its one registry lookup per schema id; that
 * deserializer is not on Maven Central).
 *
 * <p>Lines printed for the benchmark: {@code PEER running} when the application is running,
 * {@code PEER first} when the first record is folded,
 * {@code PEER changelog <json names>} and {@code PEER done <json counters>} at the end: after
 * {@code --idle} seconds without a record, once the group's committed offsets reach the end of
 * the topic (with exactly-once, the transactions holding the fold's changelog are then
 * committed too), and once the application has closed. {@code PEER failed <why>} and exit
 * status 2 otherwise.
 * The state value in the changelog is {@link RunState#serialize}'s fixed binary layout.
 */
public final class StreamsFold {
  static final String STORE = "runs";
  private static final ObjectMapper JSON = new ObjectMapper();

  private StreamsFold() {}

  /** One run's state: what every fold of the benchmark must agree on, and its counters. */
  static final class RunState {
    static final byte NEW = -1;
    static final byte RUNNING = 0;
    static final byte COMPLETED = 1;
    static final byte FAILED = 2;
    static final byte CANCELLED = 3;
    static final long NONE = Long.MIN_VALUE;

    byte status = NEW;
    long lastSeq;
    long events;
    long duplicates;
    long violations;
    long startedAt = NONE;
    long finishedAt = NONE;
    String agentSpecDigest = "";
    String gitSha = "";

    /**
     * Big-endian: status (1 byte: 0 running, 1 completed, 2 failed, 3 cancelled), last_seq,
     * events, duplicates, violations, started_at, finished_at (8 bytes each, finished_at
     * {@code Long.MIN_VALUE} when none), then agent_spec_digest and git_sha (2-byte length,
     * UTF-8). The bench reads it back with the same layout.
     */
    byte[] serialize() {
      byte[] digest = agentSpecDigest.getBytes(StandardCharsets.UTF_8);
      byte[] sha = gitSha.getBytes(StandardCharsets.UTF_8);
      ByteBuffer out = ByteBuffer.allocate(1 + 6 * 8 + 4 + digest.length + sha.length);
      out.put(status).putLong(lastSeq).putLong(events).putLong(duplicates).putLong(violations)
          .putLong(startedAt).putLong(finishedAt);
      out.putShort((short) digest.length).put(digest).putShort((short) sha.length).put(sha);
      return out.array();
    }

    static RunState deserialize(byte[] data) {
      ByteBuffer in = ByteBuffer.wrap(data);
      RunState run = new RunState();
      run.status = in.get();
      run.lastSeq = in.getLong();
      run.events = in.getLong();
      run.duplicates = in.getLong();
      run.violations = in.getLong();
      run.startedAt = in.getLong();
      run.finishedAt = in.getLong();
      run.agentSpecDigest = text(in);
      run.gitSha = text(in);
      return run;
    }

    private static String text(ByteBuffer in) {
      byte[] bytes = new byte[in.getShort() & 0xffff];
      in.get(bytes);
      return new String(bytes, StandardCharsets.UTF_8);
    }

    boolean terminal() {
      return status == COMPLETED || status == FAILED || status == CANCELLED;
    }
  }

  static final class RunStateSerde implements Serde<RunState> {
    @Override
    public Serializer<RunState> serializer() {
      return (topic, run) -> run == null ? null : run.serialize();
    }

    @Override
    public Deserializer<RunState> deserializer() {
      return (topic, data) -> data == null ? null : RunState.deserialize(data);
    }
  }

  /** A serde for values that never leave the stream thread (no repartition topic). */
  static final class UnusedSerde<T> implements Serde<T> {
    @Override
    public Serializer<T> serializer() {
      return (topic, value) -> {
        throw new IllegalStateException("events are not written to " + topic);
      };
    }

    @Override
    public Deserializer<T> deserializer() {
      return (topic, data) -> {
        throw new IllegalStateException("events are not read from " + topic);
      };
    }
  }

  /** Avro bytes to the Event record, one decoder per stream thread (they keep buffers). */
  static final class EventReader {
    private final BinaryMessageDecoder<GenericRecord> singleObject;
    private final GenericDatumReader<GenericRecord> body;
    private final boolean confluent;
    private BinaryDecoder reuse;
    private GenericRecord record;

    EventReader(Schema schema, boolean confluent) {
      this.singleObject = new BinaryMessageDecoder<>(GenericData.get(), schema);
      this.body = new GenericDatumReader<>(schema, schema, GenericData.get());
      this.confluent = confluent;
    }

    /** The event, or {@code null} for a record that is not one (counted, then skipped). */
    GenericRecord read(byte[] value) {
      try {
        if (!confluent) {
          record = singleObject.decode(value, record);
          return record;
        }
        if (value.length < 5 || value[0] != 0) {
          return null;
        }
        reuse = DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, reuse);
        record = body.read(record, reuse);
        return record;
      } catch (IOException | RuntimeException e) {
        // BadHeaderException, MissingSchemaException, EOF in the body: the faulty stream's
        // corrupt records, which runfold sends to its DLQ.
        return null;
      }
    }
  }

  /** The peer fold over one event; {@code run} is updated in place and returned. */
  static RunState fold(RunState run, GenericRecord event) {
    long seq = (Long) event.get("seq");
    long timestamp = (Long) event.get("timestamp");
    GenericRecord kind = (GenericRecord) event.get("kind");
    if (run.status == RunState.NEW) {
      run.status = RunState.RUNNING;
      run.startedAt = timestamp;
    }
    if (run.terminal()) {
      run.violations++;
      return run;
    }
    if (seq <= run.lastSeq) {
      run.duplicates++;
      return run;
    }
    if (seq > run.lastSeq + 1) {
      run.violations++;
    }
    run.lastSeq = seq;
    run.events++;
    switch (kind.getSchema().getName()) {
      case "GraphStarted" -> {
        JsonNode payload = parse(event.get("payload").toString());
        run.agentSpecDigest = payload.path("agent_spec_digest").asText("");
        run.gitSha = payload.path("git_sha").asText("");
        run.startedAt = timestamp;
      }
      case "GraphCompleted" -> end(run, RunState.COMPLETED, timestamp);
      case "GraphFailed" -> end(run, RunState.FAILED, timestamp);
      case "GraphInterrupted" -> {
        if ("cancelled".equals(kind.get("reason").toString())) {
          end(run, RunState.CANCELLED, timestamp);
        }
      }
      default -> { }
    }
    return run;
  }

  private static void end(RunState run, byte status, long timestamp) {
    run.status = status;
    run.finishedAt = timestamp;
  }

  private static JsonNode parse(String text) {
    try {
      return JSON.readTree(text);
    } catch (IOException e) {
      throw new IllegalStateException("graph_started payload is not JSON: " + e.getMessage(), e);
    }
  }

  /**
   * The partitions of {@code topic} whose offset committed by {@code group} is short of the
   * end, as {@code "partition: committed/end"}; empty once the group has committed it all.
   * The end is read_committed's (what the exactly-once consumer can reach) and offsets of a
   * transaction still open are not taken (require_stable), as the bench's runner reads them.
   */
  static List<String> uncommitted(Admin admin, String topic, String group)
      throws InterruptedException, ExecutionException, TimeoutException {
    List<TopicPartition> partitions = admin.describeTopics(List.of(topic)).allTopicNames()
        .get(10, TimeUnit.SECONDS).get(topic).partitions().stream()
        .map(info -> new TopicPartition(topic, info.partition()))
        .toList();
    Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
    partitions.forEach(partition -> latest.put(partition, OffsetSpec.latest()));
    Map<TopicPartition, ListOffsetsResultInfo> ends = admin
        .listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED))
        .all().get(10, TimeUnit.SECONDS);
    Map<TopicPartition, OffsetAndMetadata> committed = admin
        .listConsumerGroupOffsets(
            Map.of(group, new ListConsumerGroupOffsetsSpec().topicPartitions(partitions)),
            new ListConsumerGroupOffsetsOptions().requireStable(true))
        .partitionsToOffsetAndMetadata(group).get(10, TimeUnit.SECONDS);
    List<String> behind = new ArrayList<>();
    for (TopicPartition partition : partitions) {
      long end = ends.get(partition).offset();
      OffsetAndMetadata offset = committed.get(partition);  // null: nothing committed yet
      long done = offset == null ? 0 : offset.offset();
      if (done < end) {
        behind.add(partition.partition() + ": " + done + "/" + end);
      }
    }
    return behind;
  }

  /** Prints {@code PEER failed <why>} and exits 2; the shutdown hook closes the application. */
  private static void fail(String why) {
    System.out.println("PEER failed " + why);
    System.out.flush();
    System.exit(2);
  }

  private static Map<String, String> options(String[] args) {
    Map<String, String> found = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        throw new IllegalArgumentException("expected --name value pairs, got " + args[i]);
      }
      found.put(args[i].substring(2), args[i + 1]);
    }
    for (String name : new String[] {"bootstrap", "topic", "group", "schema", "state-dir"}) {
      if (!found.containsKey(name)) {
        throw new IllegalArgumentException("missing --" + name);
      }
    }
    return found;
  }

  public static void main(String[] args) throws Exception {
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    Map<String, String> opt = options(args);
    Schema schema = new Schema.Parser().parse(new File(opt.get("schema")));
    boolean confluent = "confluent".equals(opt.getOrDefault("framing", "single-object"));
    double idle = Double.parseDouble(opt.getOrDefault("idle", "2"));
    int threads = Integer.parseInt(opt.getOrDefault(
        "threads", String.valueOf(Runtime.getRuntime().availableProcessors())));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, opt.get("group"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, opt.get("bootstrap"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, opt.getOrDefault("commit-interval-ms", "100"));
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
    props.put(StreamsConfig.STATE_DIR_CONFIG, opt.get("state-dir"));
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    AtomicLong processed = new AtomicLong();
    AtomicLong firstNanos = new AtomicLong();
    AtomicLong lastNanos = new AtomicLong();
    ThreadLocal<EventReader> readers = ThreadLocal.withInitial(() -> new EventReader(schema, confluent));

    AtomicLong undecodable = new AtomicLong();

    StreamsBuilder builder = new StreamsBuilder();
    // Decoded before grouping (the key stays, so nothing is repartitioned and the event
    // serde below is never called): the aggregate only sees events.
    builder.stream(opt.get("topic"), Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .mapValues(value -> {
          long now = System.nanoTime();
          if (processed.getAndIncrement() == 0) {
            firstNanos.set(now);
            System.out.println("PEER first");
            System.out.flush();
          }
          lastNanos.set(now);
          GenericRecord event = readers.get().read(value);
          if (event == null) {
            undecodable.incrementAndGet();
          }
          return event;
        })
        .filter((runId, event) -> event != null)
        .groupByKey(Grouped.with(Serdes.String(), new UnusedSerde<GenericRecord>()))
        .aggregate(
            RunState::new,
            (runId, event, run) -> fold(run, event),
            Materialized.<String, RunState, KeyValueStore<Bytes, byte[]>>as(STORE)
                .withKeySerde(Serdes.String())
                .withValueSerde(new RunStateSerde()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setUncaughtExceptionHandler(error -> {
      System.out.println("PEER error " + error);
      System.out.flush();
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
          .StreamThreadExceptionResponse.SHUTDOWN_APPLICATION;
    });
    // "PEER running": every stream thread has its tasks, stores restored (the latency stage
    // offers load after it). The first RUNNING may come before the second thread joined the
    // group; the rebalance that follows would then be measured as latency.
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING && streams.metadataForLocalThreads().stream()
          .allMatch(thread -> !thread.activeTasks().isEmpty())) {
        System.out.println("PEER running");
        System.out.flush();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(30))));
    streams.start();
    long idleNanos = (long) (idle * 1e9);
    // Quiet is timed on this thread, from when it saw the count change. Not from lastNanos:
    // a stream thread counts a record before it stamps it, so a read in between found no
    // stamp yet (0), took System.nanoTime() itself for the quiet and stopped the peer at its
    // first record, before the rest of the topic was read.
    long seen = 0;
    long changed = System.nanoTime();
    try (Admin admin = Admin.create(
        Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, opt.get("bootstrap")))) {
      while (true) {
        Thread.sleep(50);
        KafkaStreams.State state = streams.state();
        if (state == KafkaStreams.State.ERROR || state == KafkaStreams.State.NOT_RUNNING
            || state == KafkaStreams.State.PENDING_ERROR) {
          fail("in state " + state);
        }
        long now = System.nanoTime();
        long count = processed.get();
        if (count != seen) {
          seen = count;
          changed = now;
          continue;
        }
        long quiet = now - changed;
        if (count == 0 || quiet <= idleNanos) {
          continue;
        }
        // Stop on what is committed, not on what was read: a count of records read is no
        // proof (a thread paused by a rebalance has not read its partitions yet; records of
        // an aborted transaction are read twice), and a close whose commit fails closes its
        // tasks dirty yet still returns true.
        List<String> behind;
        try {
          behind = uncommitted(admin, opt.get("topic"), opt.get("group"));
        } catch (ExecutionException | TimeoutException e) {
          behind = List.of("not known: " + e);
        }
        if (behind.isEmpty()) {
          break;
        }
        // Commits come every commit.interval.ms and a rebalance pause ends well within this;
        // past it something is stuck, said here rather than left to the caller's timeout.
        if (quiet > 60 * idleNanos) {
          fail("no record for " + quiet / 1_000_000_000L + " s and group " + opt.get("group")
              + " has not committed the end of " + opt.get("topic")
              + " (committed/end by partition: " + behind + ")");
        }
      }
    }
    Duration closing = Duration.ofSeconds(60);
    if (!streams.close(closing)) {
      fail("Kafka Streams did not close within " + closing.toSeconds() + " s");
    }
    long count = processed.get();
    double seconds = (lastNanos.get() - firstNanos.get()) / 1e9;
    System.out.println("PEER changelog [\"" + opt.get("group") + "-" + STORE + "-changelog\"]");
    System.out.println("PEER done {\"processed\": " + count + ", \"seconds\": " + seconds
        + ", \"undecodable\": " + undecodable.get() + ", \"threads\": " + threads + "}");
    System.out.flush();
    System.exit(0);
  }
}
