/*
 * slidesam live: clicks in QuPath's viewer become SAM polygons where they are made.
 *
 * Needs slidesam-qupath-client-*.jar in QuPath's extensions folder (drag it onto QuPath, restart) and a
 * slidesam server. Open an image, run this script (Automate > Script editor > Run), then add points of class
 * "SAM positive" (on the object) and "SAM negative" (not the object) with the Points tool. Each group of
 * prompts (the same annotation name; unnamed prompts are one group) gets one "Tumor" annotation named
 * "SAM: <name>", updated in place after every added, moved or deleted point. Alt+Z takes back the last point
 * of the object worked on last. Run the script again after opening another image; set STOP = true to stop.
 *
 * This script is the GUI glue only: the settings, the dialogs and remembered connection, the viewer (its image,
 * plane and visible region), the undo key and QuPath's UI thread. Everything else is in the jar and runs without
 * a GUI: org.slidesam.qupath.LiveHierarchy listens to the image's hierarchy, reads the prompts from it and
 * writes the results (tested headless on QuPath's own classes); org.slidesam.client.live holds the prompt
 * grouping, fields of view, the wire protocol and the provenance the bridge writes.
 * Every QuPath API used here and there is listed in qupath/QUPATH_API.md.
 */
import java.awt.geom.Rectangle2D
import java.awt.image.BufferedImage
import java.nio.file.Paths
import java.util.concurrent.Executor
import java.util.function.Consumer
import java.util.function.Supplier
import java.util.prefs.Preferences
import javafx.application.Platform
import javafx.event.EventHandler
import javafx.scene.input.KeyCombination
import javafx.scene.input.KeyEvent
import org.slidesam.client.ConnectOptions
import org.slidesam.client.Rect
import org.slidesam.client.Resolution
import org.slidesam.client.SlidesamClient
import org.slidesam.client.WindowMode
import org.slidesam.client.live.FovSettings
import org.slidesam.client.live.LiveImage
import org.slidesam.client.live.LiveSettings
import org.slidesam.client.live.Running
import org.slidesam.client.live.SlideMap
import org.slidesam.qupath.LiveHierarchy
import org.slidesam.qupath.ServerImages
import qupath.fx.dialogs.Dialogs
import qupath.lib.gui.QuPathGUI
import qupath.lib.gui.viewer.QuPathViewer
import qupath.lib.images.ImageData

// ---- Settings -----------------------------------------------------------------------------------------------
boolean STOP = false                               // true: stop the live client and do nothing else
boolean ASK_AGAIN = false                          // true: ask for the server address, token and certificate again
String TARGET_CLASS = "Tumor"                      // class of the result annotations
FovSettings.Mode FOV_MODE = FovSettings.Mode.SELECTION_OR_VIEW // or FovSettings.Mode.PROMPTS: the field of view `slidesam sync` uses
Resolution RESOLUTION = Resolution.FIT             // e.g. Resolution.magnification(10), Resolution.mpp(1.0)
WindowMode WINDOWS = WindowMode.AUTO               // AUTO/MULTI: regions larger than 1024 px at RESOLUTION go coarse to fine; SINGLE shrinks them
boolean ALIGN_TO_GRID = false                      // true: fields of view snap to the server's grid (precomputed slides: no encode)
List<String> SLIDE_MAP = []                        // e.g. ["/mnt/slides=cases"]: slides the server reads itself
String UNDO_KEY = "Alt+Z"                          // takes back the last point of the object worked on last
// -------------------------------------------------------------------------------------------------------------

Running.replace(null)
if (STOP) {
    Dialogs.showInfoNotification("slidesam", "Live client stopped")
    return
}
QuPathViewer viewer = QuPathGUI.getInstance().getViewer()
ImageData<BufferedImage> imageData = viewer.getImageData()
if (imageData == null) {
    Dialogs.showErrorMessage("slidesam", "Open an image first, then run this script again.")
    return
}
Preferences prefs = Preferences.userRoot().node("org/slidesam/qupath")
if (ASK_AGAIN || prefs.get("address", null) == null) {
    String address = Dialogs.showInputDialog("slidesam", "Server address (host:port)", prefs.get("address", "localhost:50051"))
    if (address == null)
        return
    prefs.put("address", address.trim())
    prefs.put("token", (Dialogs.showInputDialog("slidesam", "Token (empty: none)", prefs.get("token", "")) ?: "").trim())
    prefs.put("ca", (Dialogs.showInputDialog("slidesam", "TLS: the server's CA certificate file, 'system' for a public certificate, empty for none",
            prefs.get("ca", "")) ?: "").trim())
}
ConnectOptions options = ConnectOptions.to(prefs.get("address", null))
if (prefs.get("token", ""))
    options = options.withToken(prefs.get("token", ""))
if (prefs.get("ca", "") == "system")
    options = options.withTls()
else if (prefs.get("ca", ""))
    options = options.withTrustCertificate(Paths.get(prefs.get("ca", "")))
SlidesamClient client = new SlidesamClient(options)
try {
    client.waitReady()
} catch (Exception error) {
    client.close()
    Dialogs.showErrorMessage("slidesam", error.getMessage() + "\n(set ASK_AGAIN = true to change the address)")
    return
}

LiveImage image = ServerImages.of(imageData.getServer())
LiveSettings settings = LiveSettings.BRIDGE.withTargetClass(TARGET_CLASS)
        .withFov(FovSettings.BRIDGE.withMode(FOV_MODE).withResolution(RESOLUTION).withWindows(WINDOWS, ALIGN_TO_GRID))
Executor onFxThread = { Runnable task -> Platform.runLater(task) } as Executor
Supplier<Rect> visibleRegion = {
    Rectangle2D shown = viewer.getDisplayedRegionShape().getBounds2D()
    new Rect(shown.getX(), shown.getY(), shown.getWidth(), shown.getHeight())
} as Supplier<Rect>
Consumer<String> warn = { String message -> Dialogs.showWarningNotification("slidesam", message) } as Consumer<String>
LiveHierarchy live = new LiveHierarchy(imageData.getHierarchy(), viewer.getImagePlane(), client, image, settings,
        SlideMap.parse(SLIDE_MAP), onFxThread, visibleRegion, warn)

KeyCombination undoKey = KeyCombination.keyCombination(UNDO_KEY)
EventHandler<KeyEvent> undoFilter = { KeyEvent event ->
    if (undoKey.match(event)) {
        event.consume()
        live.undoLast()
    }
} as EventHandler<KeyEvent>

live.start()
Platform.runLater { viewer.getView().addEventFilter(KeyEvent.KEY_PRESSED, undoFilter) }
Running.replace({
    Platform.runLater { viewer.getView().removeEventFilter(KeyEvent.KEY_PRESSED, undoFilter) }
    live.close()
    client.close()
} as AutoCloseable)
Dialogs.showInfoNotification("slidesam", "Live on " + image.name() + " via " + options.address() + ": add points of class 'SAM positive' / 'SAM negative'")
