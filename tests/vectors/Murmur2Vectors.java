// Generates murmur2_partitions.json: the partition the Java client's default partitioner
// picks for a key (Utils.toPositive(Utils.murmur2(utf8(key))) % numPartitions), so that
// runfold's producers can prove they place a run where Java, Go and Rust agents do.
//
// Regenerate with the local broker's jars (`make vectors`), or by hand:
//   java -cp "$(python -c 'from runfold.kafka.jars import kafka_lib; print(kafka_lib())')/*" \
//        tests/vectors/Murmur2Vectors.java > tests/vectors/murmur2_partitions.json
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Utils;

public class Murmur2Vectors {
    static final int[] COUNTS = {1, 3, 6, 12, 64};

    public static void main(String[] args) {
        List<String> keys = new ArrayList<>();
        // Deterministic UUIDs (name-based), lower-case hyphenated like runfold's run ids.
        for (int i = 0; i < 190; i++) {
            keys.add(UUID.nameUUIDFromBytes(("runfold-vector-" + i).getBytes(StandardCharsets.UTF_8)).toString());
        }
        keys.add("");
        keys.add("a");
        keys.add("run");
        keys.add("00000000-0000-0000-0000-000000000000");
        keys.add("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF");
        keys.add("\u00fc");                 // two UTF-8 bytes
        keys.add("\u65e5\u672c\u8a9e");     // three bytes each
        keys.add("agent \ud83d\ude42 run"); // a four-byte emoji (surrogate pair)
        keys.add("tab\tand\nnewline");
        keys.add("x".repeat(1000));

        StringBuilder out = new StringBuilder();
        out.append("{\n");
        out.append("  \"generator\": \"tests/vectors/Murmur2Vectors.java\",\n");
        out.append("  \"kafka_clients_version\": \"").append(AppInfoParser.getVersion()).append("\",\n");
        out.append("  \"rule\": \"partition = (murmur2(utf8(key)) & 0x7fffffff) % partitions\",\n");
        out.append("  \"partition_counts\": [1, 3, 6, 12, 64],\n");
        out.append("  \"vectors\": [\n");
        for (int k = 0; k < keys.size(); k++) {
            String key = keys.get(k);
            int hash = Utils.murmur2(key.getBytes(StandardCharsets.UTF_8));
            out.append("    {\"key\": ").append(json(key)).append(", \"murmur2\": ").append(hash).append(", \"partitions\": {");
            for (int c = 0; c < COUNTS.length; c++) {
                if (c > 0) out.append(", ");
                out.append('"').append(COUNTS[c]).append("\": ").append(Utils.toPositive(hash) % COUNTS[c]);
            }
            out.append("}}").append(k + 1 < keys.size() ? ",\n" : "\n");
        }
        out.append("  ]\n}\n");
        System.out.print(out);
    }

    // JSON string with every non-ASCII or control character escaped, so the file is ASCII.
    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') b.append('\\').append(ch);
            else if (ch < 0x20 || ch > 0x7e) b.append(String.format("\\u%04x", (int) ch));
            else b.append(ch);
        }
        return b.append('"').toString();
    }
}
