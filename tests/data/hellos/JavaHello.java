// Sends one TLS ClientHello from Java's SSLSocket: java JavaHello.java PORT SNI
import java.util.List;
import javax.net.ssl.*;

public class JavaHello {
    public static void main(String[] a) throws Exception {
        SSLSocket s = (SSLSocket) SSLSocketFactory.getDefault().createSocket("127.0.0.1", Integer.parseInt(a[0]));
        SSLParameters p = s.getSSLParameters();
        p.setServerNames(List.of(new SNIHostName(a[1])));
        p.setApplicationProtocols(new String[] {"h2", "http/1.1"});
        s.setSSLParameters(p);
        s.setSoTimeout(10000);
        try { s.startHandshake(); } catch (Exception e) { System.err.println("expected: " + e); }
        s.close();
    }
}
