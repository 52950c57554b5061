// An upstream Java service: Apache Avro's BinaryMessageEncoder (single-object encoding) and the broker's own
// kafka-clients producer, keyed by the user id's bytes with Kafka's default (murmur2) partitioner.
// Compiled and run by tests/integration/test_java_producer.py in a temporary folder; prints the partition.
import java.io.File;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Properties;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class EmitOrder {
    // args: bootstrap topic schema.avsc user_id event_id order_id
    public static void main(String[] args) throws Exception {
        Schema schema = new Schema.Parser().parse(new File(args[2]));
        GenericRecord item = new GenericData.Record(schema.getField("items").schema().getElementType());
        item.put("sku", "JAVA");
        item.put("name", "Java mug");
        item.put("quantity", 3);
        item.put("unit_price_cents", 1200L);
        GenericRecord order = new GenericData.Record(schema);
        order.put("event_id", args[4]);
        order.put("occurred_at", System.currentTimeMillis());
        order.put("user_id", args[3]);
        order.put("order_id", args[5]);
        order.put("currency", "EUR");
        order.put("total_cents", 3600L);
        order.put("items", List.of(item));
        order.put("shipping_address", null);
        ByteBuffer encoded = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(order);
        byte[] value = new byte[encoded.remaining()];
        encoded.get(value);

        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("acks", "all");
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(props, new StringSerializer(), new ByteArraySerializer())) {
            RecordMetadata md = producer.send(new ProducerRecord<>(args[1], args[3], value)).get();
            System.out.println(md.partition());
        }
    }
}
