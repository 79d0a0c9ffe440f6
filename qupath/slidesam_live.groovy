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
 * The QuPath part stays small: prompt grouping, fields of view, the wire protocol and the provenance the
 * bridge writes live in the jar's Java library (org.slidesam.client.live), where they are tested.
 * Every QuPath API used here is listed in qupath/QUPATH_API.md.
 */
import java.nio.file.Paths
import java.util.prefs.Preferences
import javafx.application.Platform
import javafx.event.EventHandler
import javafx.scene.input.KeyCombination
import javafx.scene.input.KeyEvent
import org.locationtech.jts.io.WKTReader
import org.slidesam.client.ConnectOptions
import org.slidesam.client.Rect
import org.slidesam.client.Resolution
import org.slidesam.client.SlidesamClient
import org.slidesam.client.WindowMode
import org.slidesam.client.live.FovSettings
import org.slidesam.client.live.LiveImage
import org.slidesam.client.live.LiveSegmenter
import org.slidesam.client.live.LiveSettings
import org.slidesam.client.live.PixelReader
import org.slidesam.client.live.PromptAnnotation
import org.slidesam.client.live.ResultAnnotation
import org.slidesam.client.live.Running
import org.slidesam.client.live.SlideMap
import org.slidesam.client.live.View
import qupath.fx.dialogs.Dialogs
import qupath.lib.gui.QuPathGUI
import qupath.lib.images.servers.ServerTools
import qupath.lib.objects.PathObjects
import qupath.lib.objects.classes.PathClass
import qupath.lib.objects.hierarchy.events.PathObjectHierarchyListener
import qupath.lib.objects.hierarchy.events.PathObjectSelectionListener
import qupath.lib.regions.RegionRequest
import qupath.lib.roi.GeometryTools
import qupath.lib.roi.ROIs

// ---- Settings -----------------------------------------------------------------------------------------------
STOP = false                                  // true: stop the live client and do nothing else
ASK_AGAIN = false                             // true: ask for the server address, token and certificate again
TARGET_CLASS = "Tumor"                        // class of the result annotations
FOV_MODE = FovSettings.Mode.SELECTION_OR_VIEW // or FovSettings.Mode.PROMPTS: the field of view `slidesam sync` uses
RESOLUTION = Resolution.FIT                   // e.g. Resolution.magnification(10), Resolution.mpp(1.0)
WINDOWS = WindowMode.AUTO                     // AUTO/MULTI: regions larger than 1024 px at RESOLUTION go coarse to fine; SINGLE shrinks them
ALIGN_TO_GRID = false                         // true: fields of view snap to the server's grid (precomputed slides: no encode)
SLIDE_MAP = []                                // e.g. ["/mnt/slides=cases"]: slides the server reads itself
UNDO_KEY = "Alt+Z"                            // takes back the last point of the object worked on last
// -------------------------------------------------------------------------------------------------------------

Running.replace(null)
if (STOP) {
    Dialogs.showInfoNotification("slidesam", "Live client stopped")
    return
}
def viewer = QuPathGUI.getInstance().getViewer()
def imageData = viewer.getImageData()
if (imageData == null) {
    Dialogs.showErrorMessage("slidesam", "Open an image first, then run this script again.")
    return
}
def prefs = Preferences.userRoot().node("org/slidesam/qupath")
if (ASK_AGAIN || prefs.get("address", null) == null) {
    def address = Dialogs.showInputDialog("slidesam", "Server address (host:port)", prefs.get("address", "localhost:50051"))
    if (address == null)
        return
    prefs.put("address", address.trim())
    prefs.put("token", (Dialogs.showInputDialog("slidesam", "Token (empty: none)", prefs.get("token", "")) ?: "").trim())
    prefs.put("ca", (Dialogs.showInputDialog("slidesam", "TLS: the server's CA certificate file, 'system' for a public certificate, empty for none",
            prefs.get("ca", "")) ?: "").trim())
}
def options = ConnectOptions.to(prefs.get("address", null))
if (prefs.get("token", ""))
    options = options.withToken(prefs.get("token", ""))
if (prefs.get("ca", "") == "system")
    options = options.withTls()
else if (prefs.get("ca", ""))
    options = options.withTrustCertificate(Paths.get(prefs.get("ca", "")))
def client = new SlidesamClient(options)
try {
    client.waitReady()
} catch (Exception error) {
    client.close()
    Dialogs.showErrorMessage("slidesam", error.getMessage() + "\n(set ASK_AGAIN = true to change the address)")
    return
}

// ---- The image, as the Java library sees it --------------------------------------------------------------------
def hierarchy = imageData.getHierarchy()
def server = imageData.getServer()
def uri = server.getURIs().isEmpty() ? null : server.getURIs().iterator().next()
def calibration = server.getPixelCalibration()
double mpp = calibration.hasPixelSizeMicrons() ? calibration.getAveragedPixelSizeMicrons() : 0
double magnification = server.getMetadata().getMagnification()
def pixels = { Rect r, double downsample ->
    server.readRegion(RegionRequest.createInstance(server.getPath(), downsample, (int) r.x(), (int) r.y(), (int) r.width(), (int) r.height()))
} as PixelReader
def image = new LiveImage(ServerTools.getDisplayableImageName(server), server.getWidth(), server.getHeight(), mpp,
        Double.isNaN(magnification) ? 0 : magnification, uri?.getScheme() == "file" ? new File(uri).getPath() : null,
        uri?.toString(), pixels)
def settings = LiveSettings.BRIDGE.withTargetClass(TARGET_CLASS)
        .withFov(FovSettings.BRIDGE.withMode(FOV_MODE).withResolution(RESOLUTION).withWindows(WINDOWS, ALIGN_TO_GRID))
def plane = viewer.getImagePlane()

/** The image's annotations as the prompt logic reads them (hierarchy order). */
def prompts = {
    hierarchy.getAllObjects(false).findAll { it.isAnnotation() && it.getPathClass() != null }.collect { p ->
        def roi = p.getROI()
        def (id, cls, name) = [p.getId().toString(), p.getPathClass().toString(), p.getName()]
        if (roi.isPoint())
            return PromptAnnotation.points(id, cls, name, roi.getAllPoints().collectMany { [it.getX(), it.getY()] } as double[])
        if (roi.isArea())
            return PromptAnnotation.area(id, cls, name, roi.getBoundsX(), roi.getBoundsY(), roi.getBoundsWidth(), roi.getBoundsHeight())
        return PromptAnnotation.other(id, cls, name, roi.getRoiName())
    }
}

/** The last area annotation selected that is neither a prompt nor a result: "the selected annotation". */
def promptClasses = [settings.classes().positive(), settings.classes().negative(), settings.classes().box(), TARGET_CLASS]
def selectedArea = null
def selectionListener = { selected, previous, all ->
    if (selected != null && selected.isAnnotation() && selected.getROI().isArea() && !(selected.getPathClass()?.toString() in promptClasses))
        selectedArea = selected
} as PathObjectSelectionListener
def view = {
    def selection = selectedArea != null && selectedArea.getParent() != null ? selectedArea.getROI() : null
    def shown = viewer.getDisplayedRegionShape().getBounds2D()
    new View(selection == null ? null : new Rect(selection.getBoundsX(), selection.getBoundsY(), selection.getBoundsWidth(), selection.getBoundsHeight()),
            new Rect(shown.getX(), shown.getY(), shown.getWidth(), shown.getHeight()))
}

/** Creates the group's result annotation, or updates it in place (same object, same id); a locked result stays. */
def write = { ResultAnnotation result ->
    def existing = hierarchy.getAnnotationObjects().findAll { ResultAnnotation.groupOf(it.getDescription()) == result.group() }
    if (existing.any { it.isLocked() }) {
        Dialogs.showWarningNotification("slidesam", result.name() + " is locked: left as it is")
        return
    }
    def roi = GeometryTools.geometryToROI(new WKTReader().read(result.wkt()), plane)
    def target = existing ? existing[0] : PathObjects.createAnnotationObject(roi, PathClass.fromString(result.pathClass()))
    target.setROI(roi)
    target.setPathClass(PathClass.fromString(result.pathClass()))
    target.setName(result.name())
    target.setDescription(result.description())
    result.measurements().each { key, value -> target.getMeasurementList().put(key, value) }
    if (existing) {
        hierarchy.updateObject(target, false)
        existing.drop(1).each { hierarchy.removeObject(it, true) }
    } else {
        hierarchy.addObject(target)
    }
}

def live = new LiveSegmenter(client, image, settings, SlideMap.parse(SLIDE_MAP),
        { result -> Platform.runLater { write(result) } },
        { message -> Platform.runLater { Dialogs.showWarningNotification("slidesam", message) } })
def listener = { event ->
    if (!event.isChanging())
        Platform.runLater { live.submit(prompts(), view()) }
} as PathObjectHierarchyListener

/** Undo: take the last point of the object worked on last away; the hierarchy change makes the server undo it. */
def undoKey = KeyCombination.keyCombination(UNDO_KEY)
def keyFilter = { KeyEvent event ->
    if (!undoKey.match(event))
        return
    event.consume()
    def edit = live.undoEdit(prompts())
    def target = edit == null ? null : hierarchy.getAnnotationObjects().find { it.getId().toString() == edit.annotationId() }
    if (target == null)
        return
    def xy = edit.remaining()
    if (xy.length == 0) {
        hierarchy.removeObject(target, true)
    } else {
        double[] xs = (0..<xy.length).step(2).collect { xy[it] }
        double[] ys = (1..<xy.length).step(2).collect { xy[it] }
        target.setROI(ROIs.createPointsROI(xs, ys, target.getROI().getImagePlane()))
        hierarchy.updateObject(target, false)
    }
} as EventHandler<KeyEvent>

live.baseline(prompts())
hierarchy.addListener(listener)
hierarchy.getSelectionModel().addPathObjectSelectionListener(selectionListener)
Platform.runLater { viewer.getView().addEventFilter(KeyEvent.KEY_PRESSED, keyFilter) }
Running.replace({
    hierarchy.removeListener(listener)
    hierarchy.getSelectionModel().removePathObjectSelectionListener(selectionListener)
    Platform.runLater { viewer.getView().removeEventFilter(KeyEvent.KEY_PRESSED, keyFilter) }
    live.close()
    client.close()
} as AutoCloseable)
Dialogs.showInfoNotification("slidesam", "Live on " + image.name() + " via " + options.address() + ": add points of class 'SAM positive' / 'SAM negative'")
